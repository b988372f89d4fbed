"""The scapy reader: scapy's pcap/pcapng readers and dissectors under the rules of
:mod:`pcapvision.ingest.readers`, an independent (slow) cross-check of the other two readers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import capture, defrag
from pcapvision.ingest.constants import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    SUPPORTED_LINKTYPES,
    VLAN_ETHERTYPES,
)
from pcapvision.ingest.dpkt_decode import AF_INET6, IPV6_EXT, with_vlan
from pcapvision.ingest.packets import Packet, PacketBatch, pack_address

__all__ = ["read_scapy"]


def read_scapy(path: str, chunk_packets: int, fragments: defrag.Defragmenter) -> Iterator[PacketBatch]:
    """Scapy's pcap/pcapng readers and dissectors under the same rules (slow; for cross-checks).

    Differences: pcapng ``if_tsoffset`` is not applied (scapy ignores it) and a record cut short
    at the end of the file is counted only when its data (not its header) is incomplete.
    """
    from scapy.utils import RawPcapNgReader, RawPcapReader

    try:
        reader = RawPcapReader(path)
    except Exception as exc:  # scapy raises Scapy_Exception for foreign files
        with open(path, "rb") as fh:
            archive = capture.archive_kind(fh.read(capture.HEAD_BYTES))
        if archive is not None:
            raise CaptureFormatError(f"{path}: {archive}, not a capture; unpack it first") from exc
        raise CaptureFormatError(f"{path}: scapy cannot read it as a capture ({exc})") from exc
    packets: list[Packet] = []
    skipped: Counter[str] = Counter()
    index = 0
    last_ts = 0
    chunk_clock = -(1 << 63)  # the largest timestamp of the records of this chunk
    with reader:
        nano = getattr(reader, "nano", False)
        pcapng = isinstance(reader, RawPcapNgReader)
        while True:
            try:
                data, meta = reader._read_packet(size=1 << 30)
            except EOFError:
                break
            if pcapng:
                linktype = meta.linktype
                if meta.tshigh is None:  # simple packet block: previous timestamp
                    ts_ns = last_ts
                else:
                    ticks = (meta.tshigh << 32) | meta.tslow
                    ts_ns = ticks * 1_000_000_000 // int(meta.tsresol)
                caplen = len(data)
            else:
                linktype = reader.linktype & 0xFFFF
                ts_ns = meta.sec * 1_000_000_000 + meta.usec * (1 if nano else 1000)
                caplen = meta.caplen
            last_ts = ts_ns
            chunk_clock = max(chunk_clock, ts_ns)
            if linktype not in SUPPORTED_LINKTYPES:
                raise CaptureFormatError(f"{path}: unsupported link type {linktype}")
            if len(data) < caplen:
                skipped["truncated_record"] += 1
                break
            decoded = _decode_scapy(bytes(data), linktype)
            payload = None
            if isinstance(decoded, defrag.Fragment):
                decoded = defrag.decode_reassembled(decoded, fragments, ts_ns, _decode_scapy)
                if decoded is not None and not isinstance(decoded, str):
                    decoded, payload = decoded
            if isinstance(decoded, str):
                skipped[decoded] += 1
            elif decoded is not None:
                version, src, dst, proto, sport, dport, flags, seq, ip_bytes, at, length, vlan = decoded
                packets.append(Packet(ts_ns, index, version, src, dst, proto, sport, dport, flags, seq, ip_bytes,
                                      bytes(data[at : at + length]) if payload is None else payload, vlan))
            index += 1
            if index % chunk_packets == 0:
                fragments.expire(chunk_clock)
                skipped.update(fragments.take_skipped())
                chunk_clock = -(1 << 63)
                yield PacketBatch.from_packets(packets, skipped, Counter(scapy=chunk_packets))
                packets, skipped = [], Counter()
    if index % chunk_packets:
        fragments.expire(chunk_clock)
    skipped.update(fragments.take_skipped())
    if packets or skipped:
        yield PacketBatch.from_packets(packets, skipped, +Counter(scapy=index % chunk_packets))


def _decode_scapy(frame: bytes, linktype: int) -> tuple | str:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, Dot1Q, Ether

    n = len(frame)
    vlan = 0
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return "truncated_header"
        # scapy turns a frame with a length (<= 1500) instead of a type into Dot3: not IP.
        ip_start, ethertype = 14, Ether(frame[:14]).fields.get("type", 0)
        if ethertype in VLAN_ETHERTYPES:
            for depth in range(2):
                if n < ip_start + 4:
                    return "truncated_header"
                tag = Dot1Q(frame[ip_start : ip_start + 4])
                if depth == 0:
                    vlan = tag.vlan
                ethertype = tag.type
                ip_start += 4
                if ethertype != 0x8100 or depth == 1:
                    break
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return "truncated_header"
        ip_start, ethertype = 16, CookedLinux(frame[:16]).proto
    elif linktype == LINKTYPE_LINUX_SLL2:
        from scapy.layers.l2 import CookedLinuxV2

        if n < 20:
            return "truncated_header"
        ip_start, ethertype = 20, CookedLinuxV2(frame[:20]).proto
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return "truncated_header"
        families = {int.from_bytes(frame[:4], "little"), int.from_bytes(frame[:4], "big")}
        ip_start = 4
        ethertype = 0x0800 if 2 in families else 0x86DD if families & set(AF_INET6) else 0
    else:
        if n < 1:
            return "truncated_header"
        ip_start, version = 0, frame[0] >> 4
        ethertype = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
    if ethertype == 0x0800:
        if n - ip_start < 20:
            return "truncated_header"
        ip = IP(frame[ip_start : ip_start + 60])
        header_len = ip.ihl * 4
        if ip.version != 4 or header_len < 20 or (ip.len and ip.len < header_len):
            return "bad_ip_header"
        if n - ip_start < header_len:
            return "truncated_header"
        if ip.proto == 1:
            return "icmp"
        if ip.proto not in (6, 17):
            return "other_ip_protocol"
        if ip.flags.MF or ip.frag:
            return with_vlan(defrag.ipv4_fragment(frame, ip_start, header_len, ip.len), vlan)
        ip_bytes = ip.len or n - ip_start
        version, src, dst, proto, l4 = 4, pack_address(ip.src), pack_address(ip.dst), ip.proto, ip_start + header_len
    elif ethertype == 0x86DD:
        if n - ip_start < 40:
            return "truncated_header"
        ip6 = IPv6(frame[ip_start : ip_start + 40])
        if ip6.version != 6:
            return "bad_ip_header"
        ip_bytes = 40 + ip6.plen if ip6.plen else n - ip_start
        ip_end = min(n, ip_start + ip_bytes)
        nh, at = _scapy_ipv6_extensions(frame, ip6.nh, ip_start, ip_bytes, ip_end)
        if isinstance(nh, str):
            return nh
        if isinstance(nh, defrag.Fragment):
            return with_vlan(nh, vlan)
        if nh == 58:
            return "icmp"
        if nh not in (6, 17):
            return "other_ip_protocol"
        version, src, dst, proto, l4 = 6, pack_address(ip6.src), pack_address(ip6.dst), nh, at
    else:
        return "non_ip"
    ip_end = min(n, ip_start + ip_bytes)
    avail = ip_end - l4
    if proto == 6:
        if avail < 20:
            return "truncated_header"
        tcp = TCP(frame[l4 : l4 + 20])
        header_len = tcp.dataofs * 4
        if header_len < 20:
            return "bad_tcp_header"
        if avail < header_len:
            return "truncated_header"
        sport, dport, flags, seq = tcp.sport, tcp.dport, int(tcp.flags) & 0xFF, tcp.seq
    else:
        if avail < 8:
            return "truncated_header"
        udp = UDP(frame[l4 : l4 + 8])
        header_len, sport, dport, flags, seq = 8, udp.sport, udp.dport, 0, 0
    return (version, src, dst, proto, sport, dport, flags, seq, ip_bytes, l4 + header_len, avail - header_len, vlan)


def _scapy_ipv6_extensions(frame: bytes, nh: int, ip_start: int, ip_bytes: int,
                           ip_end: int) -> tuple[int | str | defrag.Fragment, int]:
    """Walk IPv6 extension headers with scapy's classes: (next header, skip reason or fragment;
    L4 offset)."""
    from scapy.layers.inet6 import IPv6ExtHdrFragment, IPv6ExtHdrHopByHop

    at, announced_at = ip_start + 40, ip_start + 6
    while nh in IPV6_EXT:
        if ip_end - at < 8:
            return "truncated_header", at
        if nh == 44:
            frag = IPv6ExtHdrFragment(frame[at : at + 8])
            if frag.nh == 58:
                return "icmp", at
            if frag.nh not in (6, 17) and frag.nh not in IPV6_EXT:
                return "other_ip_protocol", at
            return defrag.ipv6_fragment(frame, ip_start, ip_bytes, at, announced_at), at
        if nh == 51:
            from scapy.layers.ipsec import AH

            ah = AH(frame[at : at + 12])
            nh, at, announced_at = ah.nh, at + (ah.payloadlen + 2) * 4, at
        else:  # hop-by-hop, routing and destination options share the (nh, len) layout
            ext = IPv6ExtHdrHopByHop(frame[at : at + 2])
            nh, at, announced_at = ext.nh, at + (ext.len + 1) * 8, at
        if at > ip_end:
            return "truncated_header", at
    return nh, at
