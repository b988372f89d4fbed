"""Crafted pcap (scapy) -> pcapvision.ingest.read_flows -> render -> exact pixels, no header bytes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from pcapvision.imaging import render_flows  # noqa: E402

read_flows = pytest.importorskip("pcapvision.ingest").read_flows

CLIENT, SERVER = "171.205.239.18", "222.173.190.239"
CPORT, SPORT = 0xC0DE, 0xBEEF
MAC_C, MAC_S = "de:ad:be:ef:ca:fe", "fe:ed:fa:ce:00:01"
T0 = 1_700_000_123.25
REQUEST = b"GET /secret-path HTTP/1.1\r\nHost: example\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def crafted_capture(path):
    def pkt(t, src, dst, sport, dport, flags, seq, ack, data=b""):
        mac = (MAC_C, MAC_S) if src == CLIENT else (MAC_S, MAC_C)
        p = Ether(src=mac[0], dst=mac[1]) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        if data:
            p = p / data
        p.time = T0 + t
        return p

    c_seq, s_seq = 1000, 5000
    packets = [
        pkt(0.000, CLIENT, SERVER, CPORT, SPORT, "S", c_seq, 0),
        pkt(0.010, SERVER, CLIENT, SPORT, CPORT, "SA", s_seq, c_seq + 1),
        pkt(0.011, CLIENT, SERVER, CPORT, SPORT, "A", c_seq + 1, s_seq + 1),
        pkt(0.012, CLIENT, SERVER, CPORT, SPORT, "PA", c_seq + 1, s_seq + 1, REQUEST),
        pkt(0.030, SERVER, CLIENT, SPORT, CPORT, "PA", s_seq + 1, c_seq + 1 + len(REQUEST), RESPONSE),
        pkt(0.031, CLIENT, SERVER, CPORT, SPORT, "FA", c_seq + 1 + len(REQUEST), s_seq + 1 + len(RESPONSE)),
        pkt(0.040, SERVER, CLIENT, SPORT, CPORT, "FA", s_seq + 1 + len(RESPONSE), c_seq + 2 + len(REQUEST)),
        # A second flow: a lone SYN to another port, no payload at all.
        pkt(0.500, CLIENT, SERVER, CPORT + 1, 0xBEEE, "S", 77, 0),
    ]
    packets.append(Ether(src=MAC_C, dst=MAC_S) / IP(src=CLIENT, dst=SERVER) / UDP(sport=CPORT + 2, dport=53) / b"\x12\x34query")
    packets[-1].time = T0 + 0.6
    wrpcap(str(path), packets)
    return path


def test_capture_to_images(tmp_path):
    flows = read_flows(crafted_capture(tmp_path / "crafted.pcap"))
    assert flows.num_rows == 3
    images, summary = render_flows(flows, "payload")
    assert summary.skipped == {"no payload": 1} and images.num_rows == 2
    by_payload = {len(img.rstrip(b"\0")): img for img in images.column("image").to_pylist()}
    tcp_image = by_payload[len(REQUEST + RESPONSE)]
    assert tcp_image[: len(REQUEST + RESPONSE)] == REQUEST + RESPONSE  # session order, no header bytes
    assert not any(tcp_image[len(REQUEST + RESPONSE):])
    assert sorted(images.column("payload_length").to_pylist()) == [len(b"\x12\x34query"), len(REQUEST + RESPONSE)]
    assert set(images.column("split_group").to_pylist()) == {flows.column("source_sha256")[0].as_py()}

    header_bytes = [bytes([171, 205, 239, 18]), bytes([222, 173, 190, 239]), b"\xc0\xde", b"\xbe\xef",
                    bytes.fromhex("deadbeefcafe")[:4], bytes.fromhex("d4c3b2a1"), int(T0).to_bytes(4, "little")]
    for representation in ("payload", "byte-distribution", "flowpic"):
        table, summary = render_flows(flows, representation, dedup=False)
        assert summary.rows_in == 3
        for image in table.column("image").to_pylist():
            assert not any(h in image for h in header_bytes), representation

    flowpic, _ = render_flows(flows, "flowpic", dedup=False, params={"time_axis": "linear", "time_window_ms": 28.0})
    tcp = flowpic.filter(flowpic.column("payload_length").to_numpy() == len(REQUEST + RESPONSE))
    image = np.frombuffer(tcp.column("image")[0].as_py(), np.uint8).reshape(28, 28)
    # 7 packets; at 28 ms over 28 columns, packet t (ms) lands in column floor(t), t >= 28 ms not drawn.
    drawn = image.nonzero()
    assert sorted(set(drawn[1].tolist())) == [0, 10, 11, 12]  # 0, 10, 11, 12 ms; 30, 31, 40 ms fall outside
    assert int((image > 0).sum()) == 4 and image[:14].any() and image[14:].any()  # both directions drawn


@pytest.mark.shared
def test_real_capture_renders_its_payload(shared_captures):
    capture = shared_captures / "ppa" / "http_espn.pcapng"
    if not capture.is_file():
        pytest.skip(f"{capture} is absent")
    flows = read_flows(capture)
    table, summary = render_flows(flows, "payload", dedup=False)
    with_payload = [p for p in flows.column("payload").to_pylist() if p]
    assert summary.rows_out == len(with_payload) > 0
    for image, payload in zip(table.column("image").to_pylist(), with_payload):
        assert image == payload[:784].ljust(784, b"\0")
    for representation in ("byte-distribution", "flowpic"):
        assert render_flows(flows, representation, dedup=False)[1].rows_rendered > 0
