"""The contract between capture readers and flow assembly: columnar batches of decoded packets.

A reader (fast numpy path, dpkt, or scapy) turns a capture into a stream of :class:`PacketBatch`
objects, one per chunk of records, in capture order. Only IPv4/IPv6 packets carrying TCP or UDP
appear in a batch; everything else is counted in :attr:`PacketBatch.skipped` by reason.

Addresses are 16 bytes per packet: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address
(``::ffff:a.b.c.d``); ``ip_version`` says which one to print.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pcapvision.ingest.constants import IPV4_MAPPED_PREFIX

# TCP flag bits as in the TCP header.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

PROTO_TCP = 6
PROTO_UDP = 17


@dataclass
class PacketBatch:
    """Decoded TCP/UDP packets of one chunk of a capture, as parallel numpy arrays (length n).

    ``payload_offset``/``payload_len`` index the L4 payload (after the TCP/UDP header, bounded by
    the IP length and by what was captured) inside ``data``.
    """

    ts_ns: np.ndarray  # int64, capture timestamp in ns since the epoch
    frame_index: np.ndarray  # int64, 0-based record number in the capture file
    ip_version: np.ndarray  # uint8, 4 or 6
    src_addr: np.ndarray  # uint8 (n, 16)
    dst_addr: np.ndarray  # uint8 (n, 16)
    protocol: np.ndarray  # uint8, 6 (TCP) or 17 (UDP)
    src_port: np.ndarray  # uint16
    dst_port: np.ndarray  # uint16
    tcp_flags: np.ndarray  # uint8, 0 for UDP
    tcp_seq: np.ndarray  # uint32, 0 for UDP
    ip_bytes: np.ndarray  # int32, IP total length as on the wire (header + payload)
    payload_offset: np.ndarray  # int64, offset of the L4 payload in ``data``
    payload_len: np.ndarray  # int32, captured L4 payload length
    data: np.ndarray  # uint8 buffer the payload offsets point into
    vlan_id: np.ndarray | None = None  # uint16, VLAN id of the outermost 802.1Q tag (0: untagged)
    skipped: Counter[str] = field(default_factory=Counter)  # packets not in the batch, by reason
    # Frames of the chunk by the decoder that judged them ("fast", "dpkt", "scapy"): proves the
    # compiled fast path does the work and does not silently hand everything to dpkt.
    decoded_by: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.vlan_id is None:
            self.vlan_id = np.zeros(len(self.ts_ns), np.uint16)

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def payload(self, i: int) -> bytes:
        """The L4 payload bytes of packet ``i``."""
        start = int(self.payload_offset[i])
        return self.data[start : start + int(self.payload_len[i])].tobytes()

    @classmethod
    def empty(cls, skipped: Counter[str] | None = None) -> PacketBatch:
        return cls.from_packets([], skipped=skipped)

    @classmethod
    def from_packets(cls, packets: Iterable[Packet], skipped: Counter[str] | None = None,
                     decoded_by: Counter[str] | None = None) -> PacketBatch:
        """Build a batch from :class:`Packet` objects (slow path readers and tests)."""
        packets = list(packets)
        n = len(packets)
        data = bytearray()
        offsets = np.zeros(n, np.int64)
        for i, p in enumerate(packets):
            offsets[i] = len(data)
            data += p.payload
        return cls(
            ts_ns=np.fromiter((p.ts_ns for p in packets), np.int64, n),
            frame_index=np.fromiter((p.frame_index for p in packets), np.int64, n),
            ip_version=np.fromiter((p.ip_version for p in packets), np.uint8, n),
            src_addr=_addr_array([p.src_addr for p in packets]),
            dst_addr=_addr_array([p.dst_addr for p in packets]),
            protocol=np.fromiter((p.protocol for p in packets), np.uint8, n),
            src_port=np.fromiter((p.src_port for p in packets), np.uint16, n),
            dst_port=np.fromiter((p.dst_port for p in packets), np.uint16, n),
            tcp_flags=np.fromiter((p.tcp_flags for p in packets), np.uint8, n),
            tcp_seq=np.fromiter((p.tcp_seq for p in packets), np.uint32, n),
            ip_bytes=np.fromiter((p.ip_bytes for p in packets), np.int32, n),
            payload_offset=offsets,
            payload_len=np.fromiter((len(p.payload) for p in packets), np.int32, n),
            data=np.frombuffer(bytes(data), np.uint8),
            vlan_id=np.fromiter((p.vlan_id for p in packets), np.uint16, n),
            skipped=Counter(skipped or {}),
            decoded_by=Counter(decoded_by or {}),
        )

    def packets(self) -> list[Packet]:
        """The batch as :class:`Packet` objects (tests and cross-checks; not for hot paths)."""
        return [
            Packet(
                ts_ns=int(self.ts_ns[i]),
                frame_index=int(self.frame_index[i]),
                ip_version=int(self.ip_version[i]),
                src_addr=self.src_addr[i].tobytes(),
                dst_addr=self.dst_addr[i].tobytes(),
                protocol=int(self.protocol[i]),
                src_port=int(self.src_port[i]),
                dst_port=int(self.dst_port[i]),
                tcp_flags=int(self.tcp_flags[i]),
                tcp_seq=int(self.tcp_seq[i]),
                ip_bytes=int(self.ip_bytes[i]),
                payload=self.payload(i),
                vlan_id=int(self.vlan_id[i]),
            )
            for i in range(len(self))
        ]


@dataclass(frozen=True)
class Packet:
    """One decoded TCP/UDP packet (the row form of :class:`PacketBatch`)."""

    ts_ns: int
    frame_index: int
    ip_version: int
    src_addr: bytes  # 16 bytes, IPv4-mapped for IPv4
    dst_addr: bytes
    protocol: int
    src_port: int
    dst_port: int
    tcp_flags: int
    tcp_seq: int
    ip_bytes: int
    payload: bytes
    vlan_id: int = 0  # outermost 802.1Q VLAN id, 0 when untagged


def _addr_array(addrs: Sequence[bytes]) -> np.ndarray:
    if not addrs:
        return np.zeros((0, 16), np.uint8)
    return np.frombuffer(b"".join(addrs), np.uint8).reshape(len(addrs), 16).copy()


def pack_address(address: str | bytes) -> bytes:
    """16-byte form of an IPv4/IPv6 address given as text or as 4/16 raw bytes."""
    if isinstance(address, bytes):
        if len(address) == 4:
            return IPV4_MAPPED_PREFIX + address
        if len(address) == 16:
            return address
        raise ValueError(f"an address has 4 or 16 bytes, not {len(address)}")
    ip = ipaddress.ip_address(address)
    return IPV4_MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


def format_address(packed: bytes, ip_version: int) -> str:
    """Text form of a 16-byte address (``ip_version`` 4 prints the IPv4 part)."""
    if ip_version == 4:
        return str(ipaddress.IPv4Address(packed[12:16]))
    return str(ipaddress.IPv6Address(packed))
