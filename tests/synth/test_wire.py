"""Frame encoding against scapy's own dissection and checksums; pcap writing."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from pcapvision.synth import dns
from pcapvision.synth.wire import Direction, ones_complement_sum, pack_ip, tcp_syn_options, write_pcap

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=3000))
def test_ones_complement_sum_matches_the_rfc1071_loop(data: bytes) -> None:
    assert ones_complement_sum(data) % 0xFFFF == _naive_sum(data) % 0xFFFF
    if any(data):
        assert ones_complement_sum(data) == _naive_sum(data)


def _rebuilt_checksums(frame: bytes, l3, l4) -> tuple[int, int]:
    """Checksums scapy computes for the same packet with the checksum fields cleared."""
    packet = Ether(frame)
    if l3 is IP:
        del packet[IP].chksum
    del packet[l4].chksum
    rebuilt = Ether(bytes(packet))
    return rebuilt[l4].chksum, rebuilt[IP].chksum if l3 is IP else 0


@pytest.mark.parametrize(("src", "dst", "l3"), [("10.0.0.5", "93.184.216.34", IP), ("2001:db8::5", "2001:db8:1::9", IPv6)])
@pytest.mark.parametrize("payload", [b"", b"\x16\x03\x01" + bytes(range(200)), b"odd"])
def test_tcp_frames_dissect_in_scapy_with_valid_checksums(src: str, dst: str, l3, payload: bytes) -> None:
    direction = Direction(MAC_A, MAC_B, pack_ip(src), pack_ip(dst), ttl=57, ip_id=41)
    options = tcp_syn_options(1460, 8) if not payload else b""
    frame = direction.tcp(51000, 443, 0xFFFFFFF0, 123456, 0x18, 501, payload, options)
    packet = Ether(frame)
    assert packet[Ether].src == "02:00:00:00:00:01" and packet[Ether].dst == "02:00:00:00:00:02"
    assert packet[l3].src == src and packet[l3].dst == dst
    tcp = packet[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags), tcp.window) == (51000, 443, 0xFFFFFFF0, 123456, 0x18, 501)
    assert bytes(tcp.payload) == payload
    if options:
        assert dict((k, v) for k, v in tcp.options if k in ("MSS", "WScale")) == {"MSS": 1460, "WScale": 8}
        assert ("SAckOK", b"") in tcp.options
    tcp_sum, ip_sum = _rebuilt_checksums(frame, l3, TCP)
    assert tcp.chksum == tcp_sum
    if l3 is IP:
        assert packet[IP].chksum == ip_sum
        assert packet[IP].len == len(frame) - 14 and packet[IP].ttl == 57 and packet[IP].flags == "DF"
        assert packet[IP].id == 42  # incremented per packet
    else:
        assert packet[IPv6].plen == len(frame) - 54 and packet[IPv6].hlim == 57


@pytest.mark.parametrize(("src", "dst", "l3"), [("192.168.1.20", "192.168.1.1", IP), ("2001:db8::20", "2001:db8::1", IPv6)])
def test_udp_dns_frames_dissect_with_valid_checksums(src: str, dst: str, l3) -> None:
    from scapy.layers.dns import DNS

    direction = Direction(MAC_A, MAC_B, pack_ip(src), pack_ip(dst), ttl=64)
    query = dns.query(0x1234, "www.example.com", dns.QTYPE_A)
    frame = direction.udp(53000, 53, query)
    packet = Ether(frame)
    assert packet[UDP].sport == 53000 and packet[UDP].len == 8 + len(query)
    assert packet[UDP].chksum == _rebuilt_checksums(frame, l3, UDP)[0]
    parsed = packet[DNS]
    assert parsed.id == 0x1234 and parsed.qd[0].qname == b"www.example.com." and parsed.qd[0].qtype == 1


def test_dns_response_answers_and_nxdomain() -> None:
    from scapy.layers.dns import DNS

    answer = DNS(dns.response(7, "api.acme.io", dns.QTYPE_AAAA, ["2001:db8::7"], 300))
    assert answer.qr == 1 and answer.rcode == 0 and answer.ancount == 1
    assert answer.an[0].rdata == "2001:db8::7" and answer.an[0].ttl == 300
    missing = DNS(dns.response(8, "qwrtyp.xyz", dns.QTYPE_A, [], 300))
    assert missing.rcode == 3 and missing.ancount == 0


def test_write_pcap_records_read_back_in_order_with_microsecond_times() -> None:
    direction = Direction(MAC_A, MAC_B, pack_ip("10.0.0.1"), pack_ip("10.0.0.2"), ttl=64)
    frames = [(1_700_000_000_123_456_789 + i * 1_000_000, direction.udp(1000 + i, 53, b"x" * i)) for i in range(5)]
    buffer = io.BytesIO()
    count, size = write_pcap(buffer, frames)
    assert count == 5 and size == len(buffer.getvalue())
    buffer.seek(0)
    packets = rdpcap(buffer)
    assert [bytes(p) for p in packets] == [f for _, f in frames]
    assert [round(float(p.time), 6) for p in packets] == [round((ts + 500) // 1000 / 1e6, 6) for ts, _ in frames]
