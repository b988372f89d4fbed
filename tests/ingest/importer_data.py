"""A small capture whose flows the ground-truth files of the importer tests describe.

Times are those of a CIC-IDS2017 afternoon: 2017-07-03 13:55:10 in America/Halifax (UTC-3, ADT),
which CICFlowMeter writes as ``3/7/2017 1:55`` (12-hour clock, no PM).

Flows (initiator first; ``first_seen`` relative to T0):
    F1  TCP 192.168.10.5:50000  -> 205.174.165.73:80   +0 s   handshake, data, FIN
    F2  TCP 192.168.10.8:51000  -> 192.168.10.50:22    +5 s   handshake, data
    F3  UDP 192.168.10.9:5353   -> 192.168.10.3:53     +10 s  query, response
    F4  UDP 192.168.10.12:40000 -> 8.8.8.8:53          +20 s  query, response
    F5  TCP 192.168.10.5:50000  -> 205.174.165.73:80   +400 s F1's 5-tuple reused
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

T0_S = 1_499_100_910  # 2017-07-03T16:55:10Z = 13:55:10 ADT
T0_NS = T0_S * 10**9
S, SA, A, PA, FA = 0x02, 0x12, 0x10, 0x18, 0x11

F1 = ("192.168.10.5", 50000, "205.174.165.73", 80, 6)
F2 = ("192.168.10.8", 51000, "192.168.10.50", 22, 6)
F3 = ("192.168.10.9", 5353, "192.168.10.3", 53, 17)
F4 = ("192.168.10.12", 40000, "8.8.8.8", 53, 17)
F5 = F1
FLOW_STARTS = {"F1": 0, "F2": 5, "F3": 10, "F4": 20, "F5": 400}
FLOW_TUPLES = {"F1": F1, "F2": F2, "F3": F3, "F4": F4, "F5": F5}


def _packet(src: tuple[str, int], dst: tuple[str, int], proto: int, t_s: float, flags: int = 0,
            seq: int = 0, data: bytes = b""):
    l4 = TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq) if proto == 6 else UDP(sport=src[1], dport=dst[1])
    packet = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / IP(src=src[0], dst=dst[0]) / l4 / data
    packet.time = Decimal(T0_S) + Decimal(str(t_s))
    return packet


def _tcp(flow: tuple, start: float, close: bool) -> list:
    c, s = (flow[0], flow[1]), (flow[2], flow[3])
    steps = [(c, S, 100, b""), (s, SA, 500, b""), (c, A, 101, b""), (c, PA, 101, b"hello"), (s, PA, 501, b"world")]
    if close:
        steps += [(c, FA, 106, b""), (s, FA, 506, b""), (c, A, 107, b"")]
    return [_packet(src, s if src == c else c, 6, start + i * 0.01, flags, seq, data)
            for i, (src, flags, seq, data) in enumerate(steps)]


def _udp(flow: tuple, start: float) -> list:
    c, s = (flow[0], flow[1]), (flow[2], flow[3])
    return [_packet(c, s, 17, start, data=b"query"), _packet(s, c, 17, start + 0.01, data=b"answer")]


def write_capture(path: Path, flows: tuple[str, ...] = ("F1", "F2", "F3", "F4", "F5")) -> Path:
    packets = []
    for name in flows:
        flow, start = FLOW_TUPLES[name], FLOW_STARTS[name]
        packets += _tcp(flow, start, close=name == "F1") if flow[4] == 6 else _udp(flow, start)
    packets.sort(key=lambda p: p.time)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrpcap(str(path), packets)
    return path


def flow_name(src_ip: str, src_port: int, first_seen_ns: int) -> str:
    """Which of F1..F5 a row of the flows table is."""
    offset = round((first_seen_ns - T0_NS) / 1e9)
    return next(name for name, start in FLOW_STARTS.items()
                if start == offset and FLOW_TUPLES[name][:2] == (src_ip, src_port))
