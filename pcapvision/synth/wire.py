"""Frame encoding and pcap writing: Ethernet + IPv4/IPv6 + TCP/UDP built with ``struct``.

Building each packet as a scapy object costs tens of microseconds (layer objects, field
resolution, checksum passes); the generator writes hundreds of thousands of packets, so headers
are packed directly here, with the address part of the pseudo-header checksum computed once per
direction. ``tests/synth`` checks every field against scapy's own dissection and checksums, and
``bench/synth.py`` measures both paths.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

PROTO_TCP = 6
PROTO_UDP = 17

_ETH_IPV4 = b"\x08\x00"
_ETH_IPV6 = b"\x86\xdd"
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_UDP_HEADER = struct.Struct("!HHHH")
_PCAP_RECORD = struct.Struct("<IIII")
# Classic pcap, microsecond timestamps, Ethernet link type: what every tool reads.
PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def ones_complement_sum(data: bytes) -> int:
    """The 16-bit ones' complement sum of ``data`` (RFC 1071), as an int in [0, 0xffff].

    A big-endian integer taken modulo 0xffff equals the sum of its 16-bit words modulo 0xffff
    (2**16 == 1 mod 0xffff), so one C-level ``int.from_bytes`` replaces a Python loop.
    """
    if len(data) & 1:
        data += b"\x00"
    rest = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF if rest == 0 and any(data) else rest


def internet_checksum(*parts: int) -> int:
    """Checksum from partial ones' complement sums of 16-bit aligned parts."""
    total = sum(parts) % 0xFFFF
    if total == 0 and any(parts):
        total = 0xFFFF
    return 0xFFFF - total


@functools.lru_cache(maxsize=65536)
def pack_ip(address: str) -> bytes:
    """Raw 4- or 16-byte form of an address given as text (cached: hosts reuse few addresses)."""
    return ipaddress.ip_address(address).packed


@dataclass
class Direction:
    """Precomputed headers of one direction of one flow (addresses, MACs, TTL); packets patch the rest."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: bytes  # 4 or 16 raw bytes
    dst_ip: bytes
    ttl: int
    ip_id: int = 0

    def __post_init__(self) -> None:
        self.ipv6 = len(self.src_ip) == 16
        self._eth = self.dst_mac + self.src_mac + (_ETH_IPV6 if self.ipv6 else _ETH_IPV4)
        self._addr_sum = ones_complement_sum(self.src_ip + self.dst_ip)

    def _ip(self, protocol: int, l4_len: int) -> bytes:
        if self.ipv6:
            return _IPV6_HEADER.pack(0x60000000, l4_len, protocol, self.ttl, self.src_ip, self.dst_ip)
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        total = 20 + l4_len
        header = _IPV4_HEADER.pack(0x45, 0, total, self.ip_id, 0x4000, self.ttl, protocol, 0, self.src_ip, self.dst_ip)
        checksum = internet_checksum(ones_complement_sum(header))
        return header[:10] + checksum.to_bytes(2, "big") + header[12:]

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
            payload: bytes = b"", options: bytes = b"") -> bytes:
        """One Ethernet frame carrying a TCP segment (checksums filled in)."""
        header_len = 20 + len(options)
        segment = _TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (header_len // 4) << 4,
                                   flags, window, 0, 0) + options + payload
        checksum = internet_checksum(self._addr_sum, PROTO_TCP, len(segment), ones_complement_sum(segment))
        return self._eth + self._ip(PROTO_TCP, len(segment)) + segment[:16] + checksum.to_bytes(2, "big") + segment[18:]

    def udp(self, sport: int, dport: int, payload: bytes) -> bytes:
        """One Ethernet frame carrying a UDP datagram (checksums filled in)."""
        length = 8 + len(payload)
        datagram = _UDP_HEADER.pack(sport, dport, length, 0) + payload
        checksum = internet_checksum(self._addr_sum, PROTO_UDP, length, ones_complement_sum(datagram)) or 0xFFFF
        return self._eth + self._ip(PROTO_UDP, length) + datagram[:6] + checksum.to_bytes(2, "big") + datagram[8:]


def tcp_syn_options(mss: int, window_scale: int) -> bytes:
    """SYN options MSS, NOP, window scale, NOP, NOP, SACK permitted (12 bytes, as Windows sends)."""
    return struct.pack("!BBH", 2, 4, mss) + b"\x01" + struct.pack("!BBB", 3, 3, window_scale) + b"\x01\x01\x04\x02"


def write_pcap(stream: BinaryIO, packets: Iterable[tuple[int, bytes]]) -> tuple[int, int]:
    """Write ``(timestamp_ns, frame)`` records after the global header; (packets, bytes written)."""
    stream.write(PCAP_GLOBAL_HEADER)
    count, size = 0, len(PCAP_GLOBAL_HEADER)
    pack = _PCAP_RECORD.pack
    for ts_ns, frame in packets:
        micros = (ts_ns + 500) // 1000
        record = pack(micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        stream.write(record)
        stream.write(frame)
        count += 1
        size += len(record) + len(frame)
    return count, size
