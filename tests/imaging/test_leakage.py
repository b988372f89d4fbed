"""No address, port, capture header or timestamp reaches a pixel; payload-less flows are counted."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pcapvision.imaging import REPRESENTATIONS, render_flows
from tests.imaging.helpers import make_flow, make_flows_table

SRC_IP, SRC_IP_BYTES = "171.205.239.18", bytes([171, 205, 239, 18])
DST_IP, DST_IP_BYTES = "222.173.190.239", bytes([222, 173, 190, 239])
SRC_IP6 = "2001:db8:feed:face:cafe:beef:1234:5678"
SRC_IP6_BYTES = bytes.fromhex("20010db8feedfacecafebeef12345678")
SRC_PORT, DST_PORT = 0xC0DE, 0xBEEF
FIRST_SEEN_NS = 0x17A5_C3E1_9B2D_4F68
MAC = bytes.fromhex("deadbeefcafe")


def header_patterns(ip6: bool) -> dict[str, bytes]:
    patterns = {
        "dst_ip": DST_IP_BYTES,
        "src_ip6" if ip6 else "src_ip": SRC_IP6_BYTES if ip6 else SRC_IP_BYTES,
        "src_port": struct.pack(">H", SRC_PORT), "src_port_le": struct.pack("<H", SRC_PORT),
        "dst_port": struct.pack(">H", DST_PORT), "dst_port_le": struct.pack("<H", DST_PORT),
        "first_seen_ns": struct.pack(">q", FIRST_SEEN_NS)[:4], "first_seen_ns_le": struct.pack("<q", FIRST_SEEN_NS)[4:],
        "first_seen_s": struct.pack("<I", FIRST_SEEN_NS // 10**9), "mac": MAC[:4],
        "pcap_magic": bytes.fromhex("d4c3b2a1"), "pcapng_magic": bytes.fromhex("0a0d0d0a"),
    }
    return patterns


@pytest.mark.parametrize("ip6", [False, True])
@pytest.mark.parametrize("representation", sorted(REPRESENTATIONS))
def test_headers_never_reach_pixels(representation, ip6):
    rng = np.random.default_rng(11)
    patterns = header_patterns(ip6)
    rows = []
    for i in range(50):
        payload = rng.integers(1, 256, int(rng.integers(1, 1200)), dtype=np.uint8).tobytes()
        if any(p in payload for p in patterns.values()):
            continue  # the payload itself must not carry a pattern, or the test proves nothing
        times = np.sort(rng.random(10) * 500)
        rows.append(make_flow(
            i, payload=payload, src_ip=SRC_IP6 if ip6 else SRC_IP, dst_ip=DST_IP, ip_version=6 if ip6 else 4,
            src_port=SRC_PORT, dst_port=DST_PORT, first_seen_ns=FIRST_SEEN_NS, last_seen_ns=FIRST_SEEN_NS + 10**9,
            packets=[(float(t), int(rng.integers(0, 2)), int(rng.integers(0, 1400))) for t in times],
        ))
    assert len(rows) > 40
    table, summary = render_flows(make_flows_table(rows), representation, dedup=False)
    assert table.num_rows == len(rows)
    images = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape(-1, 28, 28)
    for sequence in (img.tobytes() for img in images):  # row-major: the payload's own order
        for name, pattern in patterns.items():
            assert pattern not in sequence, f"{name} found in a {representation} image"
    # Moving the flows to other addresses, ports and times changes no pixel (any encoding of them).
    moved = [dict(r, src_ip="10.1.2.3", dst_ip="10.3.2.1", ip_version=4, src_port=1234, dst_port=80,
                  first_seen_ns=0, last_seen_ns=10**9) for r in rows]
    moved_table, _ = render_flows(make_flows_table(moved), representation, dedup=False)
    assert moved_table.column("image").equals(table.column("image"))


@pytest.mark.parametrize("representation", ["payload", "byte-distribution"])
def test_flows_without_payload_are_skipped_and_counted(representation):
    rows = [make_flow(0, payload=b"abc"), make_flow(1, payload=b""), make_flow(2, payload=None),
            make_flow(3, payload=b"xyz")]
    table, summary = render_flows(make_flows_table(rows), representation)
    assert table.column("flow_id").to_pylist() == [rows[0]["flow_id"], rows[3]["flow_id"]]
    assert summary.skipped == {"no payload": 2} and summary.rows_in == 4 and summary.rows_out == 2
    flowpic, flowpic_summary = render_flows(make_flows_table(rows), "flowpic", dedup=False)
    assert flowpic.num_rows == 4 and flowpic_summary.skipped == {}
