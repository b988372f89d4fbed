"""Small captures crafted for tests: packets built with scapy, containers written byte by byte.

Three layers, freely combined:

* packets (L3 bytes): :class:`PacketSpec` describes a TCP/UDP packet and knows the
  :class:`~pcapvision.ingest.packets.Packet` a reader must return for it; :func:`icmp4`,
  :func:`icmp6`, :func:`ipv4_fragments`... build packets readers must skip;
* link layers (frame bytes): :func:`ethernet` (optional 802.1Q/QinQ tags, padding), :func:`sll`,
  :func:`sll2`, :func:`null_loopback`, :func:`raw`; :func:`frame_for` picks one by link type;
* containers (files): :func:`write_pcap` (either byte order, micro/nanosecond, gzip) and
  :func:`write_pcapng` (several interfaces, if_tsresol/if_tsoffset, EPB/SPB/PB, unknown blocks).

Example::

    spec = PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443, payload=b"\\x16\\x03\\x01hello")
    write_pcap(tmp_path / "a.pcap", [Record(1_700_000_000_000_001_000, ethernet(spec.ip_packet()))])
    assert next(read_packets(tmp_path / "a.pcap")).packets() == [spec.expected(1_700_000_000_000_001_000, 0)]
"""

from __future__ import annotations

import gzip as gzip_module
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from pcapvision.ingest.packets import Packet, pack_address

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276

T0_NS = 1_700_000_000_123_456_000  # a timestamp with non-zero microseconds


# --- packets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketSpec:
    """A TCP or UDP packet over IPv4 or IPv6 (chosen by the address family of ``src``).

    ``ipv6_ext`` lists IPv6 extension headers to insert, by name: ``"hop"``, ``"routing"``,
    ``"dest"``, ``"frag"`` (a first fragment: offset 0, more fragments set).
    """

    src: str
    dst: str
    sport: int
    dport: int
    protocol: str = "tcp"  # "tcp" or "udp"
    flags: str = "PA"  # scapy TCP flags
    seq: int = 1000
    payload: bytes = b""
    ipv6_ext: tuple[str, ...] = ()
    ip_options: bytes = b""  # raw IPv4 options (length a multiple of 4)
    tcp_options: tuple = ()  # scapy TCP options, e.g. (("MSS", 1460),)

    @property
    def ip_version(self) -> int:
        return ipaddress.ip_address(self.src).version

    def l4(self):
        if self.protocol == "tcp":
            return TCP(sport=self.sport, dport=self.dport, flags=self.flags, seq=self.seq,
                       options=list(self.tcp_options)) / Raw(self.payload)
        return UDP(sport=self.sport, dport=self.dport) / Raw(self.payload)

    def ip_packet(self) -> bytes:
        """The packet's bytes from the IP header on."""
        if self.ip_version == 4:
            from scapy.layers.inet import IPOption

            ip = IP(src=self.src, dst=self.dst, id=7)
            if self.ip_options:
                ip.options = [IPOption(self.ip_options)]
            return bytes(ip / self.l4())
        layers = IPv6(src=self.src, dst=self.dst)
        for name in self.ipv6_ext:
            layers = layers / {
                "hop": IPv6ExtHdrHopByHop,
                "routing": IPv6ExtHdrRouting,
                "dest": IPv6ExtHdrDestOpt,
                "frag": lambda: IPv6ExtHdrFragment(offset=0, m=1, id=99),
            }[name]()
        return bytes(layers / self.l4())

    def expected(self, ts_ns: int, frame_index: int) -> Packet:
        """The packet a reader must return for this spec."""
        packet = self.ip_packet()
        tcp_flags = int(TCP(flags=self.flags).flags) if self.protocol == "tcp" else 0
        return Packet(
            ts_ns=ts_ns,
            frame_index=frame_index,
            ip_version=self.ip_version,
            src_addr=pack_address(self.src),
            dst_addr=pack_address(self.dst),
            protocol=6 if self.protocol == "tcp" else 17,
            src_port=self.sport,
            dst_port=self.dport,
            tcp_flags=tcp_flags,
            tcp_seq=self.seq if self.protocol == "tcp" else 0,
            ip_bytes=len(packet),
            payload=self.payload,
        )


def icmp4(src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    return bytes(IP(src=src, dst=dst) / ICMP() / Raw(b"ping"))


def icmp6(src: str = "2001:db8::1", dst: str = "2001:db8::2") -> bytes:
    return bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest())


def other_ip_protocol(src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = 47) -> bytes:
    """An IPv4 packet of a protocol that is neither TCP, UDP nor ICMP (GRE by default)."""
    return bytes(IP(src=src, dst=dst, proto=proto) / Raw(b"\x00" * 8))


def ipv4_fragments(spec: PacketSpec, fragment_bytes: int = 16) -> list[bytes]:
    """``spec`` (IPv4) split into fragments carrying ``fragment_bytes`` of IP payload each."""
    ip = IP(spec.ip_packet())
    return [bytes(f) for f in fragment(ip, fragsize=fragment_bytes)]


def ipv6_later_fragment(src: str = "2001:db8::1", dst: str = "2001:db8::2") -> bytes:
    """A non-first IPv6 fragment (offset > 0): no L4 header."""
    return bytes(IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(offset=8, m=0, id=99, nh=6) / Raw(b"x" * 24))


def arp_frame() -> bytes:
    """An Ethernet ARP request (not IP)."""
    return bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"))


def with_ipv4_header_length(packet: bytes, ihl: int) -> bytes:
    """``packet`` (IPv4) with its header length field forced to ``ihl`` words (malformed if < 5)."""
    return bytes([0x40 | ihl]) + packet[1:]


def with_tcp_data_offset(packet: bytes, words: int) -> bytes:
    """``packet`` (IPv4 without options, TCP) with the TCP data offset forced to ``words``."""
    at = 20 + 12
    return packet[:at] + bytes([(words << 4) | (packet[at] & 0x0F)]) + packet[at + 1 :]


# --- link layers -------------------------------------------------------------------------------


def _ethertype(packet: bytes) -> int:
    return 0x86DD if packet and packet[0] >> 4 == 6 else 0x0800


def ethernet(packet: bytes, *, vlan: Sequence[int] = (), outer_tpid: int = 0x8100, pad: bool = True) -> bytes:
    """An Ethernet II frame around an IP packet, with 802.1Q tags (``vlan`` ids, outermost first).

    Two tags make QinQ, the outer one with ``outer_tpid`` (0x88a8, 0x9100 or 0x8100). Frames are
    zero-padded to 60 bytes like on the wire unless ``pad`` is false.
    """
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    inner_type = _ethertype(packet)
    if not vlan:
        frame.type = inner_type
        layers = frame
    else:
        frame.type = outer_tpid if len(vlan) > 1 else 0x8100
        layers = frame
        for i, vid in enumerate(vlan):
            tag_cls = Dot1AD if (i == 0 and len(vlan) > 1 and outer_tpid == 0x88A8) else Dot1Q
            is_last = i == len(vlan) - 1
            layers = layers / tag_cls(vlan=vid, type=inner_type if is_last else 0x8100)
    data = bytes(layers / Raw(packet))
    if pad and len(data) < 60:
        data += b"\x00" * (60 - len(data))
    return data


def sll(packet: bytes) -> bytes:
    """A Linux cooked (SLL, link type 113) frame."""
    return bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00",
                             proto=_ethertype(packet)) / Raw(packet))


def sll2(packet: bytes) -> bytes:
    """A Linux cooked v2 (SLL2, link type 276) frame."""
    return bytes(CookedLinuxV2(proto=_ethertype(packet), ifindex=2, pkttype=0) / Raw(packet))


def null_loopback(packet: bytes, *, byteorder: str = "little") -> bytes:
    """A BSD loopback frame (link types 0 and 108): 4-byte address family, then the packet."""
    family = 2 if packet[0] >> 4 == 4 else 30  # AF_INET; AF_INET6 as on macOS
    return family.to_bytes(4, byteorder) + packet


def raw(packet: bytes) -> bytes:
    """Raw IP (link types 101, 228, 229): the packet itself."""
    return packet


def frame_for(linktype: int, packet: bytes) -> bytes:
    """The frame carrying ``packet`` on an interface of ``linktype``."""
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(packet)
    if linktype == LINKTYPE_LINUX_SLL:
        return sll(packet)
    if linktype == LINKTYPE_LINUX_SLL2:
        return sll2(packet)
    if linktype == LINKTYPE_NULL:
        return null_loopback(packet, byteorder="little")
    if linktype == LINKTYPE_LOOP:
        return null_loopback(packet, byteorder="big")
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
        return raw(packet)
    raise ValueError(f"no crafting for link type {linktype}")


# --- containers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One captured frame: capture time (ns since the epoch), bytes, and the pcapng interface."""

    ts_ns: int
    frame: bytes
    interface: int = 0
    orig_len: int | None = None  # on-the-wire length; default len(frame)


def pcap_bytes(records: Iterable[Record], *, linktype: int = LINKTYPE_ETHERNET, nanosecond: bool = False,
               big_endian: bool = False, snaplen: int = 262144) -> bytes:
    """A pcap file's bytes."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in records:
        sec, frac = divmod(r.ts_ns, 1_000_000_000)
        if not nanosecond:
            frac //= 1000
        orig = len(r.frame) if r.orig_len is None else r.orig_len
        out.append(struct.pack(e + "IIII", sec, frac, len(r.frame), orig) + r.frame)
    return b"".join(out)


def write_pcap(path: str | Path, records: Iterable[Record], *, linktype: int = LINKTYPE_ETHERNET,
               nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144,
               compress: bool = False) -> Path:
    """Write a pcap file (gzip-compressed when ``compress``); returns its path."""
    data = pcap_bytes(records, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
    path = Path(path)
    path.write_bytes(gzip_module.compress(data, mtime=0) if compress else data)
    return path


@dataclass(frozen=True)
class Interface:
    """A pcapng interface: link type, snaplen, if_tsresol byte (None: no option, i.e. 6) and
    if_tsoffset seconds (None: no option)."""

    linktype: int
    snaplen: int = 0
    tsresol: int | None = None
    tsoffset_s: int | None = None


def _block(e: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(e + "II", block_type, length) + body + struct.pack(e + "I", length)


def _option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def ticks_for(ts_ns: int, iface: Interface) -> int:
    """``ts_ns`` in the units of ``iface`` (exact for the resolutions used in tests)."""
    ns = ts_ns - (iface.tsoffset_s or 0) * 1_000_000_000
    v = 6 if iface.tsresol is None else iface.tsresol
    if v & 0x80:
        return (ns << (v & 0x7F)) // 1_000_000_000
    return ns * 10**v // 1_000_000_000


@dataclass
class PcapngWriter:
    """Builds a pcapng file block by block (for tests that need odd block sequences)."""

    big_endian: bool = False
    blocks: list[bytes] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)

    @property
    def e(self) -> str:
        return ">" if self.big_endian else "<"

    def section(self) -> PcapngWriter:
        body = struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
        self.blocks.append(_block(self.e, 0x0A0D0D0A, body))
        self.interfaces = []
        return self

    def interface(self, iface: Interface) -> PcapngWriter:
        body = struct.pack(self.e + "HHI", iface.linktype, 0, iface.snaplen)
        opts = b""
        if iface.tsresol is not None:
            opts += _option(self.e, 9, bytes([iface.tsresol]))
        if iface.tsoffset_s is not None:
            opts += _option(self.e, 14, struct.pack(self.e + "q", iface.tsoffset_s))
        if opts:
            opts += struct.pack(self.e + "HH", 0, 0)
        self.blocks.append(_block(self.e, 1, body + opts))
        self.interfaces.append(iface)
        return self

    def epb(self, r: Record, *, caplen: int | None = None) -> PcapngWriter:
        ticks = ticks_for(r.ts_ns, self.interfaces[r.interface])
        orig = len(r.frame) if r.orig_len is None else r.orig_len
        cap = len(r.frame) if caplen is None else caplen
        body = struct.pack(self.e + "IIIII", r.interface, ticks >> 32, ticks & 0xFFFFFFFF, cap, orig) + r.frame
        self.blocks.append(_block(self.e, 6, body))
        return self

    def spb(self, frame: bytes) -> PcapngWriter:
        """A simple packet block (interface 0, no timestamp)."""
        self.blocks.append(_block(self.e, 3, struct.pack(self.e + "I", len(frame)) + frame))
        return self

    def pb(self, r: Record) -> PcapngWriter:
        """An obsolete packet block."""
        ticks = ticks_for(r.ts_ns, self.interfaces[r.interface])
        body = struct.pack(self.e + "HHIIII", r.interface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(r.frame), len(r.frame)) + r.frame
        self.blocks.append(_block(self.e, 2, body))
        return self

    def unknown(self, block_type: int = 0x0BAD, body: bytes = b"vendor data") -> PcapngWriter:
        self.blocks.append(_block(self.e, block_type, body))
        return self

    def to_bytes(self) -> bytes:
        return b"".join(self.blocks)

    def write(self, path: str | Path, *, compress: bool = False) -> Path:
        data = self.to_bytes()
        path = Path(path)
        path.write_bytes(gzip_module.compress(data, mtime=0) if compress else data)
        return path


def write_pcapng(path: str | Path, interfaces: Sequence[Interface], records: Iterable[Record], *,
                 big_endian: bool = False, compress: bool = False) -> Path:
    """Write a one-section pcapng file: the interfaces, then one EPB per record."""
    w = PcapngWriter(big_endian=big_endian).section()
    for iface in interfaces:
        w.interface(iface)
    for r in records:
        w.epb(r)
    return w.write(path, compress=compress)


# --- ready-made mixes -----------------------------------------------------------------------------


def tls_like_payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that look like a TLS application-data record (deterministic)."""
    import random

    rng = random.Random(seed)
    body = bytes(rng.getrandbits(8) for _ in range(max(n - 5, 0)))
    return (b"\x17\x03\x03" + max(n - 5, 0).to_bytes(2, "big") + body)[:n]


def standard_specs() -> list[PacketSpec]:
    """TCP and UDP over IPv4 and IPv6 (with extension headers), options, empty payloads."""
    return [
        PacketSpec("10.0.0.1", "93.184.216.34", 40000, 443, flags="S", seq=1),
        PacketSpec("93.184.216.34", "10.0.0.1", 443, 40000, flags="SA", seq=5000),
        PacketSpec("10.0.0.1", "93.184.216.34", 40000, 443, flags="A", seq=2),
        PacketSpec("10.0.0.1", "93.184.216.34", 40000, 443, seq=2, payload=b"\x16\x03\x01\x00\x05hello"),
        PacketSpec("93.184.216.34", "10.0.0.1", 443, 40000, seq=5001, payload=tls_like_payload(1200)),
        PacketSpec("10.0.0.1", "8.8.8.8", 5353, 53, protocol="udp", payload=b"\x12\x34query"),
        PacketSpec("10.0.0.1", "8.8.8.8", 5353, 53, protocol="udp", payload=b""),
        PacketSpec("10.0.0.1", "10.0.0.9", 1234, 80, ip_options=b"\x01\x01\x01\x00", payload=b"GET /"),
        PacketSpec("10.0.0.1", "10.0.0.9", 1234, 80, tcp_options=(("MSS", 1460), ("NOP", None), ("WScale", 7)),
                   flags="S", seq=77),
        PacketSpec("2001:db8::1", "2001:db8::2", 50000, 443, seq=9, payload=tls_like_payload(300, 1)),
        PacketSpec("2001:db8::2", "2001:db8::1", 443, 50000, flags="FA", seq=10),
        PacketSpec("2001:db8::1", "2001:db8::53", 5000, 53, protocol="udp", payload=b"dns?"),
        PacketSpec("2001:db8::1", "2001:db8::2", 50001, 443, ipv6_ext=("hop", "dest"), payload=b"ext"),
        PacketSpec("2001:db8::1", "2001:db8::2", 50002, 443, ipv6_ext=("routing",), payload=b"rt"),
    ]


def skipped_packets() -> dict[str, list[bytes]]:
    """IP packets readers must skip, by the reason they must count."""
    tcp4 = PacketSpec("10.0.0.1", "10.0.0.2", 1000, 2000, payload=b"x" * 40).ip_packet()
    return {
        "icmp": [icmp4(), icmp6()],
        "other_ip_protocol": [other_ip_protocol()],
        # A datagram whose last fragment never comes, and an IPv6 fragment alone: never reassembled.
        "fragment_incomplete": ipv4_fragments(PacketSpec("10.0.0.1", "10.0.0.2", 1000, 2000, payload=b"y" * 64))[:-1]
        + [ipv6_later_fragment()],
        # A first fragment of 13 bytes with more to come: fragments other than the last carry 8k bytes.
        "fragment_bad": [PacketSpec("2001:db8::1", "2001:db8::2", 50003, 443, protocol="udp", ipv6_ext=("frag",),
                                    payload=b"first").ip_packet()],
        "bad_ip_header": [with_ipv4_header_length(tcp4, 3)],
        "bad_tcp_header": [with_tcp_data_offset(tcp4, 2)],
    }


def standard_records(linktype: int = LINKTYPE_ETHERNET, start_ns: int = T0_NS, step_ns: int = 1_234_000,
                     with_skipped: bool = True) -> tuple[list[Record], list[Packet], dict[str, int]]:
    """Records of :func:`standard_specs` (and of :func:`skipped_packets`, interleaved) on
    ``linktype``, with the packets and skip counts a reader must return for them."""
    records: list[Record] = []
    expected: list[Packet] = []
    skipped: dict[str, int] = {}
    extra = [(reason, p) for reason, ps in skipped_packets().items() for p in ps] if with_skipped else []
    specs = standard_specs()
    for i in range(max(len(specs), len(extra))):
        if i < len(specs):
            ts = start_ns + len(records) * step_ns
            expected.append(specs[i].expected(ts, len(records)))
            records.append(Record(ts, frame_for(linktype, specs[i].ip_packet())))
        if i < len(extra):
            reason, packet = extra[i]
            records.append(Record(start_ns + len(records) * step_ns, frame_for(linktype, packet)))
            skipped[reason] = skipped.get(reason, 0) + 1
    if with_skipped and linktype == LINKTYPE_ETHERNET:
        records.append(Record(start_ns + len(records) * step_ns, arp_frame()))
        skipped["non_ip"] = 1
    return records, expected, skipped
