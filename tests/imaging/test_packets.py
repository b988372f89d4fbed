"""The `packets` representation: golden rows, a per-packet Python oracle, TLS record placement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapvision.imaging import get_representation
from tests.imaging.helpers import make_flow, make_flows_table, tls_record

T_MAX = 60000.0


def log_px(value, top):
    return int(round(255 * math.log1p(min(max(value, 0.0), top)) / math.log1p(top)))


def tls_headers(stream: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, content type, length, first body byte) of each record header, walked one by one."""
    out, pos = [], 0
    while pos + 5 <= len(stream) and 20 <= stream[pos] <= 24 and stream[pos + 1] == 3:
        length = int.from_bytes(stream[pos + 3:pos + 5], "big")
        out.append((pos, stream[pos], length, stream[pos + 5] if pos + 5 < len(stream) else 0))
        pos += 5 + length
    return out


def oracle(row: dict) -> np.ndarray:
    """The documented columns computed packet by packet (independent of the vectorised code)."""
    image = np.zeros((28, 28), dtype=np.uint8)
    packets = list(zip(row["packet_time_ms"], row["packet_direction"], row["packet_ip_bytes"],
                       row["packet_payload_bytes"], row["packet_tcp_flags"]))[:28]
    last_time, last_by_direction = None, {}
    offsets = {0: 0, 1: 0}
    records = {0: tls_headers(row["src2dst_payload"] or b""), 1: tls_headers(row["dst2src_payload"] or b"")}
    for r, (t, d, ip, pay, flags) in enumerate(packets):
        image[r, 0] = 255
        image[r, 1] = 255 if d else 0
        image[r, 2] = min(ip, 1500) * 255 // 1500
        image[r, 3] = log_px(ip, 65535)
        image[r, 4] = min(pay, 1460) * 255 // 1460
        image[r, 5] = log_px(pay, 65535)
        image[r, 6] = log_px(0.0 if last_time is None else t - last_time, T_MAX)
        image[r, 7] = log_px(t - last_by_direction[d] if d in last_by_direction else 0.0, T_MAX)
        image[r, 8] = log_px(t, T_MAX)
        for bit in range(8):
            image[r, 9 + bit] = 255 if flags >> bit & 1 else 0
        here = [rec for rec in records[d] if offsets[d] <= rec[0] < offsets[d] + pay]
        if here:
            _, ctype, length, body = here[0]
            image[r, 17] = {20: 51, 21: 102, 22: 153, 23: 204, 24: 255}[ctype]
            image[r, 18] = log_px(length, 16384 + 2048)
            image[r, 19] = body
            image[r, 20] = 51 * min(len(here), 5)
        offsets[d] += pay
        last_time, last_by_direction[d] = t, t
    return image


def flow_with(i, packets, flags=None, up=b"", down=b""):
    """``packets``: (time_ms, direction, payload_bytes)."""
    return make_flow(i, packets=packets, packet_tcp_flags=flags or [0x18] * len(packets),
                     src2dst_payload=up, dst2src_payload=down, payload=up + down)


def test_golden_handshake_rows():
    hello = tls_record(b"\x01" + b"\x00" * 95)  # 101 bytes: a ClientHello record
    server = tls_record(b"\x02" + b"\x00" * 49) + b"\x14\x03\x03\x00\x01\x01"  # ServerHello + ChangeCipherSpec
    packets = [(0.0, 0, 0), (10.0, 1, 0), (10.5, 0, 0), (11.0, 0, len(hello)), (30.0, 1, len(server))]
    row = flow_with(0, packets, flags=[0x02, 0x12, 0x10, 0x18, 0x18], up=hello, down=server)
    image = get_representation("packets").render(make_flows_table([row])).images[0]
    assert image[:5, 0].tolist() == [255] * 5 and not image[5:].any()  # rows past the last packet stay 0
    assert image[:5, 1].tolist() == [0, 255, 0, 0, 255]
    assert image[3, 2] == (101 + 40) * 255 // 1500 and image[3, 4] == 101 * 255 // 1460
    assert image[1, 6] == log_px(10.0, T_MAX) and image[2, 7] == log_px(10.5, T_MAX) and image[1, 7] == 0
    assert image[0, 10] == 255 and image[0, 13] == 0  # SYN only
    assert image[1, 9:17].tolist() == [0, 255, 0, 0, 255, 0, 0, 0]  # SYN+ACK
    assert image[3, 17:21].tolist() == [153, log_px(96, 18432), 1, 51]  # one handshake record, ClientHello
    assert image[4, 17:21].tolist() == [153, log_px(50, 18432), 2, 102]  # ServerHello first, two records
    assert not image[:3, 17:21].any() and not image[:, 21:].any()
    assert np.array_equal(image, oracle(row))


def test_record_in_a_later_segment_goes_to_that_packet():
    record = tls_record(b"\x0b" + b"\x00" * 1999)  # a 2005-byte Certificate record split over two segments
    second = b"\x17\x03\x03\x00\x10" + b"\xaa" * 16
    down = record + second
    packets = [(0.0, 0, 0), (1.0, 1, 1400), (1.1, 1, 605), (1.2, 1, len(second))]
    image = get_representation("packets").render(make_flows_table([flow_with(0, packets, down=down)])).images[0]
    assert image[1, 17] == 153 and image[1, 19] == 11 and image[2, 17] == 0 and image[3, 17] == 204


def test_not_tls_draws_no_record_columns():
    row = flow_with(0, [(0.0, 0, 20), (1.0, 1, 20)], up=b"GET / HTTP/1.1\r\nHost:", down=b"HTTP/1.1 200 OK\r\n\r\nabc")
    image = get_representation("packets").render(make_flows_table([row])).images[0]
    assert not image[:, 17:21].any() and image[:2, 0].all()


def test_flows_without_packets_are_skipped():
    rows = [flow_with(0, []), flow_with(1, [(0.0, 0, 5)])]
    result = get_representation("packets").render(make_flows_table(rows))
    assert result.valid.tolist() == [False, True] and result.skip_reason == "no packets"


packet = st.tuples(st.floats(0, 200000, allow_nan=False), st.integers(0, 1), st.integers(0, 3000), st.integers(0, 255))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(packet, max_size=40), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_matches_the_per_packet_oracle(flows, rnd):
    rows = []
    for i, pk in enumerate(flows):
        pk = sorted(pk)
        streams = {0: b"", 1: b""}
        for d in (0, 1):  # a run of TLS records (or junk) covering this direction's payload
            total = sum(p[2] for p in pk if p[1] == d)
            while len(streams[d]) < total:
                ctype = rnd.choice([20, 21, 22, 23, 23, 23, 99])
                body = bytes([rnd.randrange(256)]) * rnd.randrange(0, 700)
                streams[d] += bytes([ctype, 3, 3]) + len(body).to_bytes(2, "big") + body
            streams[d] = streams[d][: min(total, 4096)]
        rows.append(make_flow(i, packets=[(t, d, pay) for t, d, pay, _ in pk], packet_tcp_flags=[f for *_, f in pk],
                              src2dst_payload=streams[0], dst2src_payload=streams[1]))
    result = get_representation("packets").render(make_flows_table(rows))
    for row, image, valid in zip(rows, result.images, result.valid):
        assert valid == bool(row["packet_time_ms"])
        assert np.array_equal(image, oracle(row))


@pytest.mark.parametrize("identity", ["src_ip", "dst_ip", "src_port", "dst_port", "first_seen_ns", "source_file",
                                      "tls_sni", "community_id", "flow_id", "ip_version", "protocol"])
def test_reads_no_identity_column(identity):
    assert identity not in get_representation("packets").required_columns()
