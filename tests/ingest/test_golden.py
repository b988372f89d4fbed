"""Golden tests, as nfstream does them: tiny captures crafted here, expected flow tables written out.

Each capture is crafted with scapy (pcapng by hand, to control its interfaces) and ingested end to
end; the expected rows below are written from the packets, not from the code, and compared column
by column. ``community_id`` is checked against an independent implementation of the spec (and the
spec's published example), ``flow_id`` against its definition. The same captures must give the
identical table with every reader (``auto``, ``dpkt``, ``scapy``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.utils import wrpcap

from pcapvision.ingest import IngestOptions, ingest, iter_flow_tables, read_flows
from pcapvision.ingest.flowid import flow_id
from pcapvision.ingest.summary import CaptureStats
from pcapvision.io import metadata_from_schema, sha256_file
from tests.ingest import crafted as c

T0 = Decimal("1700000000")  # capture start, s
T0_NS = 1_700_000_000 * 10**9
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
S, SA, A, PA, FA, R = 0x02, 0x12, 0x10, 0x18, 0x11, 0x04


def ms(value: float | str) -> Decimal:
    return T0 + Decimal(str(value)) / 1000


def at(packet: Any, time_ms: float | str) -> Any:
    packet.time = ms(time_ms)
    return packet


def eth(packet: Any) -> Any:
    # Explicit MACs: left empty, scapy would try to ARP for them.
    return Ether(src=MAC_A, dst=MAC_B) / packet


# --- captures --------------------------------------------------------------------------------------
def write_tcp(path: Path, client: tuple[str, int], server: tuple[str, int], steps: list[tuple], *,
              ip: Any = IP) -> Path:
    """A TCP conversation: ``steps`` of (time ms, sender, flags, seq, data), over ``ip`` in Ethernet."""
    packets = []
    for t, src, flags, seq, data in steps:
        dst = server if src == client else client
        packets.append(at(eth(ip(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq)
                              / data), t))
    wrpcap(str(path), packets)
    return path


def tcp_session(path: Path) -> Path:
    """Handshake, data both ways, a retransmission, an out-of-order and an overlapping segment, FIN.

    Client bytes 1001..1012 arrive as "AAAA", "AAAA" again, "CCCC" (at 1009, ahead of a hole) and
    "zzBBBBzz" (1003..1010): first-seen bytes win, so the client stream reads AAAABBBBCCCC.
    The 5-tuple is the Community ID spec's example.
    """
    c, s = ("128.232.110.120", 34855), ("66.35.250.204", 80)
    steps = [(c, S, 1000, b""), (s, SA, 5000, b""), (c, A, 1001, b""), (c, PA, 1001, b"AAAA"),
             (s, PA, 5001, b"bbbbbb"), (c, PA, 1001, b"AAAA"), (c, PA, 1009, b"CCCC"), (c, PA, 1003, b"zzBBBBzz"),
             (s, FA, 5007, b""), (c, FA, 1013, b""), (s, A, 5008, b"")]
    return write_tcp(path, c, s, [(i * 10, *step) for i, step in enumerate(steps)])


def tcp_rst_then_port_reuse(path: Path) -> Path:
    """A connection reset by the server, then a new SYN on the same 5-tuple closed by FINs."""
    c, s = ("10.0.0.1", 40000), ("10.0.0.2", 22)
    steps = [(0, c, S, 100, b""), (1, s, SA, 300, b""), (2, c, A, 101, b""), (3, c, PA, 101, b"hi"),
             (4, s, R, 301, b""),
             (1000, c, S, 900, b""), (1001, s, SA, 700, b""), (1002, c, A, 901, b""), (1003, c, FA, 901, b""),
             (1004, s, FA, 701, b""), (1005, c, A, 902, b"")]
    return write_tcp(path, c, s, steps)


def udp_idle_split(path: Path) -> Path:
    """A query/response, then the same 5-tuple again 130 s later (> the 120 s idle timeout)."""
    c, s = ("10.1.1.1", 5353), ("10.1.1.2", 53)
    steps = [(0, c, b"q1"), (50, s, b"r1!"), (130_000, c, b"q2"), (130_020, s, b"r2!")]
    packets = []
    for t, src, data in steps:
        dst = s if src == c else c
        packets.append(at(eth(IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / data), t))
    wrpcap(str(path), packets)
    return path


def vlan(path: Path) -> Path:
    packets = [
        at(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=7) / IP(src="172.16.0.1", dst="172.16.0.2")
           / UDP(sport=1111, dport=2222) / b"abc", 0),
        at(Ether(src=MAC_B, dst=MAC_A) / Dot1Q(vlan=7) / IP(src="172.16.0.2", dst="172.16.0.1")
           / UDP(sport=2222, dport=1111) / b"de", 5),
    ]
    wrpcap(str(path), packets)
    return path


def tcp_hole(path: Path) -> Path:
    """The capture missed the client's first 100-byte segment (seq 1001): 200 bytes follow it
    ("B" * 100 at 1101, "C" * 100 at 1201), a retransmission of "C" fills nothing; the server
    answers 50 bytes, then misses 30 (seq 5051..5080) and sends 20 more."""
    c, s = ("10.2.0.1", 40001), ("10.2.0.2", 8080)
    steps = [(c, S, 1000, b""), (s, SA, 5000, b""), (c, A, 1001, b""), (c, PA, 1101, b"B" * 100),
             (c, PA, 1201, b"C" * 100), (c, PA, 1201, b"C" * 100), (s, PA, 5001, b"x" * 50),
             (s, PA, 5081, b"y" * 20), (c, FA, 1301, b""), (s, FA, 5101, b"")]
    return write_tcp(path, c, s, [(i, *step) for i, step in enumerate(steps)])


def two_vlans(path: Path) -> Path:
    """One 5-tuple seen on VLAN 10 and again on VLAN 20 (a router on a stick), then in QinQ with
    outer tag 100 (inner 10), then untagged: four flows, keyed by the outermost tag."""
    def udp(tags: tuple[int, ...], forward: bool, data: bytes, t: int) -> Any:
        frame = Ether(src=MAC_A, dst=MAC_B)
        for tag in tags:
            frame = frame / Dot1Q(vlan=tag)
        ends = (("172.16.0.1", 1111), ("172.16.0.2", 2222))
        (src, sport), (dst, dport) = ends if forward else ends[::-1]
        return at(frame / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / data, t)

    wrpcap(str(path), [udp((10,), True, b"abc", 0), udp((20,), True, b"abc", 1), udp((10,), False, b"de", 2),
                       udp((20,), False, b"de", 3), udp((100, 10), True, b"q", 4), udp((), True, b"u", 5)])
    return path


def ipv6(path: Path) -> Path:
    c, s = ("2001:db8::1", 50000), ("2001:db8::2", 443)
    steps = [(c, S, 10, b""), (s, SA, 20, b""), (c, A, 11, b""), (c, PA, 11, b"ping"), (s, PA, 21, b"pong"),
             (c, R, 15, b"")]
    return write_tcp(path, c, s, [(i, *step) for i, step in enumerate(steps)], ip=IPv6)


def linux_sll(path: Path) -> Path:
    packets = [
        at(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x0a\x00\x00", proto=0x0800)
           / IP(src="192.168.5.5", dst="192.168.5.1") / UDP(sport=6000, dport=53) / (b"x" * 10), 0),
        at(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x0b\x00\x00", proto=0x0800)
           / IP(src="192.168.5.1", dst="192.168.5.5") / UDP(sport=53, dport=6000) / (b"y" * 20), 7),
    ]
    wrpcap(str(path), packets, linktype=113)
    return path


def pcapng_two_interfaces(path: Path) -> Path:
    """A pcapng with an Ethernet interface and a Linux-SLL interface, packets interleaved."""
    def block(kind: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        length = len(body) + 12
        return struct.pack("<II", kind, length) + body + struct.pack("<I", length)

    def epb(interface: int, time_ms: int, frame: bytes) -> bytes:
        ts_us = int(ms(time_ms) * 10**6)
        return block(6, struct.pack("<IIIII", interface, ts_us >> 32, ts_us & 0xFFFFFFFF, len(frame), len(frame))
                     + frame)

    sll = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x0c\x00\x00", proto=0x0800)
    frames = [
        (0, 0, bytes(eth(IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=7000, dport=7001) / b"one"))),
        (1, 1, bytes(sll / IP(src="10.9.0.3", dst="10.9.0.4") / UDP(sport=8000, dport=8001) / b"two!")),
        (0, 2, bytes(eth(IP(src="10.9.0.2", dst="10.9.0.1") / UDP(sport=7001, dport=7000) / b"1"))),
    ]
    data = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data += block(1, struct.pack("<HHI", 1, 0, 65535)) + block(1, struct.pack("<HHI", 113, 0, 65535))
    data += b"".join(epb(i, t, f) for i, t, f in frames)
    path.write_bytes(data)
    return path


def fragments_and_noise(path: Path) -> Path:
    """A UDP datagram in two IPv4 fragments, an ARP request, an ICMP echo, then one plain UDP packet."""
    big = IP(src="10.5.0.1", dst="10.5.0.2", id=77) / UDP(sport=4000, dport=4001) / (b"F" * 100)
    frags = fragment(big, fragsize=64)
    assert len(frags) == 2
    packets = [at(eth(f), i) for i, f in enumerate(frags)]
    packets.append(at(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.5.0.1", pdst="10.5.0.2"), 2))
    packets.append(at(eth(IP(src="10.5.0.1", dst="10.5.0.2") / ICMP()), 3))
    packets.append(at(eth(IP(src="10.5.0.1", dst="10.5.0.2") / UDP(sport=4000, dport=4001) / b"ok"), 4))
    wrpcap(str(path), packets)
    return path


BIG4 = (bytes(range(256)) * 12)[:3000]
BIG6 = BIG4[::-1]


def fragmented(path: Path) -> Path:
    """3,000-byte UDP datagrams: over IPv4 in three fragments out of order plus a late fragment
    overlapping the first one with other bytes (first arrival wins), completed at 3 ms; over IPv6
    in three fragments, completed at 6 ms. Then a datagram whose other fragments never come (timed
    out: the capture runs 31 s past it), and one whose last fragment comes 31 s after its first
    (the first times out, the last waits in vain until the end of the capture)."""
    v4 = fragment(IP(src="10.6.0.1", dst="10.6.0.2", id=100) / UDP(sport=5000, dport=5001) / BIG4, fragsize=1480)
    overlap = IP(src="10.6.0.1", dst="10.6.0.2", id=100, proto=17, flags="MF", frag=0) / (b"Z" * 16)
    v6 = fragment6(IPv6(src="2001:db8::10", dst="2001:db8::20") / IPv6ExtHdrFragment(id=7)
                   / UDP(sport=5000, dport=5001) / BIG6, 1280)
    assert (len(v4), len(v6)) == (3, 3)
    lone = fragment(IP(src="10.6.0.1", dst="10.6.0.2", id=200) / UDP(sport=5002, dport=5003) / (b"L" * 64),
                    fragsize=32)[0]
    late = fragment(IP(src="10.6.0.1", dst="10.6.0.2", id=300) / UDP(sport=5004, dport=5005) / (b"T" * 56),
                    fragsize=32)
    packets = [at(eth(v4[2]), 0), at(eth(v4[0]), 1), at(eth(overlap), 2), at(eth(v4[1]), 3),
               at(eth(v6[0]), 4), at(eth(v6[1]), 5), at(eth(v6[2]), 6), at(eth(lone), 10),
               at(eth(late[0]), 20), at(eth(late[1]), 31_020)]
    wrpcap(str(path), packets)
    return path


# --- expected rows (written from the packets above) ------------------------------------------------
def flow(src: str, sport: int, dst: str, dport: int, proto: int, version: int, first_ms: float, last_ms: float,
         packets: tuple[int, int], ip_bytes: tuple[int, int], payload_bytes: tuple[int, int], payload: bytes,
         s2d: bytes, d2s: bytes, times: list[float], dirs: list[int], plens: list[int], ipbs: list[int],
         flags: list[int], end: str, *, vlan: int = 0, missed: tuple[int, int] = (0, 0),
         holes: tuple[list[int], list[int]] = ([], [])) -> dict[str, Any]:
    return {
        "src_ip": src, "dst_ip": dst, "src_port": sport, "dst_port": dport, "protocol": proto, "ip_version": version,
        "vlan_id": vlan,
        "first_seen_ns": T0_NS + int(first_ms * 10**6), "last_seen_ns": T0_NS + int(last_ms * 10**6),
        "duration_ms": float(last_ms - first_ms),
        "src2dst_packets": packets[0], "dst2src_packets": packets[1], "bidirectional_packets": sum(packets),
        "src2dst_bytes": ip_bytes[0], "dst2src_bytes": ip_bytes[1], "bidirectional_bytes": sum(ip_bytes),
        "src2dst_payload_bytes": payload_bytes[0], "dst2src_payload_bytes": payload_bytes[1],
        "src2dst_missed_bytes": missed[0], "dst2src_missed_bytes": missed[1],
        "src2dst_payload_holes": holes[0], "dst2src_payload_holes": holes[1],
        "payload": payload, "src2dst_payload": s2d, "dst2src_payload": d2s,
        "packet_time_ms": times, "packet_direction": dirs, "packet_payload_bytes": plens, "packet_ip_bytes": ipbs,
        "packet_tcp_flags": flags,
        "tls_sni": None, "tls_version": None, "tls_ja3": None, "tls_ja3_hash": None,
        "end_reason": end, "label": None, "family": None, "label_source": None,
    }


EXPECTED: dict[str, tuple[Any, list[dict[str, Any]], dict[str, int]]] = {
    "tcp_session.pcap": (tcp_session, [
        flow("128.232.110.120", 34855, "66.35.250.204", 80, 6, 4, 0, 100, (7, 4), (300, 166), (20, 6),
             b"AAAAbbbbbbBBBBCCCC", b"AAAABBBBCCCC", b"bbbbbb",
             [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
             [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1], [0, 0, 0, 4, 6, 4, 4, 8, 0, 0, 0],
             [40, 40, 40, 44, 46, 44, 44, 48, 40, 40, 40], [S, SA, A, PA, PA, PA, PA, PA, FA, FA, A], "fin"),
    ], {}),
    "tcp_rst_reuse.pcap": (tcp_rst_then_port_reuse, [
        flow("10.0.0.1", 40000, "10.0.0.2", 22, 6, 4, 0, 4, (3, 2), (122, 80), (2, 0), b"hi", b"hi", b"",
             [0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 0, 0, 1], [0, 0, 0, 2, 0], [40, 40, 40, 42, 40],
             [S, SA, A, PA, R], "rst"),
        flow("10.0.0.1", 40000, "10.0.0.2", 22, 6, 4, 1000, 1005, (4, 2), (160, 80), (0, 0), b"", b"", b"",
             [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 0, 0, 1, 0], [0] * 6, [40] * 6, [S, SA, A, FA, FA, A], "fin"),
    ], {}),
    "udp_idle.pcap": (udp_idle_split, [
        flow("10.1.1.1", 5353, "10.1.1.2", 53, 17, 4, 0, 50, (1, 1), (30, 31), (2, 3), b"q1r1!", b"q1", b"r1!",
             [0.0, 50.0], [0, 1], [2, 3], [30, 31], [0, 0], "idle_timeout"),
        flow("10.1.1.1", 5353, "10.1.1.2", 53, 17, 4, 130_000, 130_020, (1, 1), (30, 31), (2, 3), b"q2r2!", b"q2",
             b"r2!", [0.0, 20.0], [0, 1], [2, 3], [30, 31], [0, 0], "end_of_capture"),
    ], {}),
    "vlan.pcap": (vlan, [
        flow("172.16.0.1", 1111, "172.16.0.2", 2222, 17, 4, 0, 5, (1, 1), (31, 30), (3, 2), b"abcde", b"abc", b"de",
             [0.0, 5.0], [0, 1], [3, 2], [31, 30], [0, 0], "end_of_capture", vlan=7),
    ], {}),
    "tcp_hole.pcap": (tcp_hole, [  # --on-hole stop (default): each direction stops at its hole
        flow("10.2.0.1", 40001, "10.2.0.2", 8080, 6, 4, 0, 9, (6, 4), (540, 230), (300, 70), b"x" * 50, b"",
             b"x" * 50, [float(i) for i in range(10)], [0, 1, 0, 0, 0, 0, 1, 1, 0, 1],
             [0, 0, 0, 100, 100, 100, 50, 20, 0, 0], [40, 40, 40, 140, 140, 140, 90, 60, 40, 40],
             [S, SA, A, PA, PA, PA, PA, PA, FA, FA], "fin", missed=(100, 30), holes=([0], [50])),
    ], {}),
    "tcp_hole_skip.pcap": (tcp_hole, [  # --on-hole skip: holes closed, joins marked
        flow("10.2.0.1", 40001, "10.2.0.2", 8080, 6, 4, 0, 9, (6, 4), (540, 230), (300, 70),
             b"x" * 50 + b"B" * 100 + b"C" * 100 + b"y" * 20, b"B" * 100 + b"C" * 100, b"x" * 50 + b"y" * 20,
             [float(i) for i in range(10)], [0, 1, 0, 0, 0, 0, 1, 1, 0, 1],
             [0, 0, 0, 100, 100, 100, 50, 20, 0, 0], [40, 40, 40, 140, 140, 140, 90, 60, 40, 40],
             [S, SA, A, PA, PA, PA, PA, PA, FA, FA], "fin", missed=(100, 30), holes=([0], [50])),
    ], {}),
    "two_vlans.pcap": (two_vlans, [
        flow("172.16.0.1", 1111, "172.16.0.2", 2222, 17, 4, 0, 2, (1, 1), (31, 30), (3, 2), b"abcde", b"abc", b"de",
             [0.0, 2.0], [0, 1], [3, 2], [31, 30], [0, 0], "end_of_capture", vlan=10),
        flow("172.16.0.1", 1111, "172.16.0.2", 2222, 17, 4, 1, 3, (1, 1), (31, 30), (3, 2), b"abcde", b"abc", b"de",
             [0.0, 2.0], [0, 1], [3, 2], [31, 30], [0, 0], "end_of_capture", vlan=20),
        flow("172.16.0.1", 1111, "172.16.0.2", 2222, 17, 4, 4, 4, (1, 0), (29, 0), (1, 0), b"q", b"q", b"",
             [0.0], [0], [1], [29], [0], "end_of_capture", vlan=100),
        flow("172.16.0.1", 1111, "172.16.0.2", 2222, 17, 4, 5, 5, (1, 0), (29, 0), (1, 0), b"u", b"u", b"",
             [0.0], [0], [1], [29], [0], "end_of_capture"),
    ], {}),
    "ipv6.pcap": (ipv6, [
        flow("2001:db8::1", 50000, "2001:db8::2", 443, 6, 6, 0, 5, (4, 2), (244, 124), (4, 4), b"pingpong", b"ping",
             b"pong", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 0, 0, 1, 0], [0, 0, 0, 4, 4, 0],
             [60, 60, 60, 64, 64, 60], [S, SA, A, PA, PA, R], "rst"),
    ], {}),
    "sll.pcap": (linux_sll, [
        flow("192.168.5.5", 6000, "192.168.5.1", 53, 17, 4, 0, 7, (1, 1), (38, 48), (10, 20), b"x" * 10 + b"y" * 20,
             b"x" * 10, b"y" * 20, [0.0, 7.0], [0, 1], [10, 20], [38, 48], [0, 0], "end_of_capture"),
    ], {}),
    "two_interfaces.pcapng": (pcapng_two_interfaces, [
        flow("10.9.0.1", 7000, "10.9.0.2", 7001, 17, 4, 0, 2, (1, 1), (31, 29), (3, 1), b"one1", b"one", b"1",
             [0.0, 2.0], [0, 1], [3, 1], [31, 29], [0, 0], "end_of_capture"),
        flow("10.9.0.3", 8000, "10.9.0.4", 8001, 17, 4, 1, 1, (1, 0), (32, 0), (4, 0), b"two!", b"two!", b"",
             [0.0], [0], [4], [32], [0], "end_of_capture"),
    ], {}),
    "fragments.pcap": (fragments_and_noise, [  # the datagram, reassembled at its second fragment
        flow("10.5.0.1", 4000, "10.5.0.2", 4001, 17, 4, 1, 4, (2, 0), (158, 0), (102, 0), b"F" * 100 + b"ok",
             b"F" * 100 + b"ok", b"", [0.0, 3.0], [0, 0], [100, 2], [128, 30], [0, 0], "end_of_capture"),
    ], {"fragment_merged": 1, "non_ip": 1, "icmp": 1}),
    "fragmented.pcap": (fragmented, [
        flow("10.6.0.1", 5000, "10.6.0.2", 5001, 17, 4, 3, 3, (1, 0), (3028, 0), (3000, 0), BIG4, BIG4, b"",
             [0.0], [0], [3000], [3028], [0], "end_of_capture"),
        flow("2001:db8::10", 5000, "2001:db8::20", 5001, 17, 6, 6, 6, (1, 0), (3048, 0), (3000, 0), BIG6, BIG6,
             b"", [0.0], [0], [3000], [3048], [0], "end_of_capture"),
    ], {"fragment_merged": 5, "fragment_timeout": 2, "fragment_incomplete": 1}),
}


OPTIONS = {"tcp_hole_skip.pcap": IngestOptions(on_hole="skip")}


def reference_community_id(src: str, dst: str, sport: int, dport: int, proto: int) -> str:
    """Community ID v1, seed 0, straight from the spec (independent of pcapvision's)."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack("!H", 0) + a + b + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def test_reference_community_id_matches_the_spec_example() -> None:
    assert reference_community_id("128.232.110.120", "66.35.250.204", 34855, 80, 6) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden")
    return {name: make(root / name) for name, (make, _, _) in EXPECTED.items()}


def _sort_key(row: dict[str, Any]) -> tuple:
    return row["first_seen_ns"], row["protocol"], row["src_ip"], row["src_port"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_flow_table(crafted: dict[str, Path], name: str) -> None:
    path = crafted[name]
    _, expected_rows, expected_skipped = EXPECTED[name]
    stats = CaptureStats(str(path), sha256_file(path))
    batches = list(iter_flow_tables(path, OPTIONS.get(name, IngestOptions()), None, stats=stats))
    rows = sorted(pa.Table.from_batches(batches).to_pylist(), key=_sort_key)
    assert len(rows) == len(expected_rows)
    sha = sha256_file(path)
    for column in expected_rows[0]:
        assert [r[column] for r in rows] == [e[column] for e in expected_rows], f"{name}: column {column}"
    for row in rows:
        assert row["source_file"] == str(path)
        assert row["source_sha256"] == sha
        assert row["community_id"] == reference_community_id(row["src_ip"], row["dst_ip"], row["src_port"],
                                                             row["dst_port"], row["protocol"])
        assert row["flow_id"] == flow_id(sha, row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"],
                                         row["protocol"], row["first_seen_ns"], row["vlan_id"])
    assert len({r["flow_id"] for r in rows}) == len(rows)
    assert Counter({k: v for k, v in stats.packets_skipped.items() if v}) == Counter(expected_skipped)
    missed = [r["src2dst_missed_bytes"] + r["dst2src_missed_bytes"] for r in expected_rows]
    assert (stats.tcp_flows_with_holes, stats.tcp_missed_bytes) == (sum(m > 0 for m in missed), sum(missed))


@pytest.mark.parametrize("reader", ["dpkt", "scapy"])
def test_every_reader_gives_the_identical_table(crafted: dict[str, Path], reader: str) -> None:
    for name, path in crafted.items():
        auto = read_flows(path, IngestOptions(reader="auto"))
        other = read_flows(path, IngestOptions(reader=reader))
        assert other.num_rows == auto.num_rows, name
        for column in auto.column_names:
            assert other.column(column).equals(auto.column(column)), f"{name}: {reader} differs in {column}"


# --- every format and link type of tests/ingest/crafted.py -----------------------------------------
def _crafted_formats(root: Path) -> dict[str, tuple[Path, dict[str, int]]]:
    """The readers' standard mix (TCP/UDP over IPv4/IPv6 with options and extension headers, plus a
    packet of every skip reason) in every container and link type; with the expected skip counts."""
    out: dict[str, tuple[Path, dict[str, int]]] = {}
    for linktype in (c.LINKTYPE_ETHERNET, c.LINKTYPE_LINUX_SLL, c.LINKTYPE_LINUX_SLL2, c.LINKTYPE_NULL,
                     c.LINKTYPE_LOOP, c.LINKTYPE_RAW):
        records, _, skipped = c.standard_records(linktype)
        out[f"link{linktype}.pcap"] = (c.write_pcap(root / f"link{linktype}.pcap", records, linktype=linktype),
                                       skipped)
    records, _, skipped = c.standard_records()
    out["ns-big-endian.pcap.gz"] = (c.write_pcap(root / "ns-big-endian.pcap.gz", records, nanosecond=True,
                                                 big_endian=True, compress=True), skipped)
    # pcapng: Ethernet (µs) and SLL (ns, if_tsresol 9) interfaces, records alternating between them.
    eth_records, _, eth_skipped = c.standard_records(c.LINKTYPE_ETHERNET, step_ns=2_000_000)
    sll_records, _, sll_skipped = c.standard_records(c.LINKTYPE_LINUX_SLL, start_ns=c.T0_NS + 1_000_000,
                                                     step_ns=2_000_000, with_skipped=False)
    mixed = sorted(eth_records + [c.Record(r.ts_ns, r.frame, interface=1) for r in sll_records],
                   key=lambda r: r.ts_ns)
    path = c.write_pcapng(root / "two-interfaces.pcapng", [c.Interface(c.LINKTYPE_ETHERNET),
                                                           c.Interface(c.LINKTYPE_LINUX_SLL, tsresol=9)], mixed)
    out["two-interfaces.pcapng"] = (path, dict(Counter(eth_skipped) + Counter(sll_skipped)))
    return out


@pytest.fixture(scope="module")
def crafted_formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, int]]]:
    return _crafted_formats(tmp_path_factory.mktemp("formats"))


def test_every_crafted_format_ingests_and_readers_agree(crafted_formats, tmp_path: Path) -> None:
    reference = None
    for name, (path, skipped) in crafted_formats.items():
        tables = {reader: read_flows(path, IngestOptions(reader=reader)) for reader in ("auto", "dpkt", "scapy")}
        auto = tables["auto"]
        assert auto.num_rows >= 7, name  # the standard mix holds 8 distinct 5-tuples (7 in pcapng: merged)
        for reader in ("dpkt", "scapy"):
            for column in auto.column_names:
                assert tables[reader].column(column).equals(auto.column(column)), f"{name}: {reader}: {column}"
        assert sources_skipped(auto) == {k: v for k, v in skipped.items() if v}, name
        # The same packets in another container or link type make the same flows (ids differ: the
        # file hash is part of them).
        content = auto.drop_columns(["flow_id", "source_file", "source_sha256"]).replace_schema_metadata(None)
        if name.startswith("link") or name.startswith("ns-"):
            if reference is None:
                reference = content
            assert content.equals(reference), name
    summary = ingest([p for p, _ in crafted_formats.values()], tmp_path / "all.parquet", jobs=2)
    assert summary.files_failed == [] and summary.files_ok == len(crafted_formats)


def sources_skipped(table: pa.Table) -> dict[str, int]:
    (source,) = metadata_from_schema(table.schema)["sources"]
    return source["packets_skipped"]
