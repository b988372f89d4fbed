"""Capture readers: a capture file in, a stream of :class:`PacketBatch` out.

Three readers yield the same packets and the same skip counts:

``auto``
    the container walker of :mod:`pcapvision.ingest.capture` and the vectorised decoder of
    :mod:`pcapvision.ingest.fastpath`; frames the fast path does not handle go to dpkt.
``dpkt``
    the same container walker; dpkt decodes every frame (the reference decoder).
``scapy``
    scapy's own pcap/pcapng readers and dissectors: an independent cross-check, slow.

Decoding rules (all readers): the link layer gives an IPv4 or IPv6 header (else ``non_ip``);
IPv4 and IPv6 fragments of TCP/UDP datagrams are reassembled (:mod:`pcapvision.ingest.defrag`;
what could not be is counted by reason, ``fragment_*``);
ICMP/ICMPv6 count as ``icmp``, other protocols as ``other_ip_protocol``; headers cut short by the
capture or by the IP length count as ``truncated_header``, impossible ones as ``bad_ip_header``
or ``bad_tcp_header``. The L4 payload is what follows the TCP/UDP header up to the end of the IP
packet (its length field; all captured bytes when it is 0), bounded by what was captured.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator

import dpkt
import numpy as np

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import capture, defrag, fastpath
from pcapvision.ingest.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    RAW_LINKTYPES,
    RecordChunk,
    capture_info,
)
from pcapvision.ingest.packets import IPV4_MAPPED_PREFIX, Packet, PacketBatch, pack_address
from pcapvision.validation import check_choice, check_positive_int

__all__ = ["READERS", "SKIP_REASONS", "capture_info", "decode_frame_dpkt", "read_packets"]

log = logging.getLogger(__name__)

READERS = ("auto", "dpkt", "scapy")
SKIP_REASONS = (
    "non_ip", "icmp", "other_ip_protocol", "truncated_header", "bad_ip_header", "bad_tcp_header",
    "truncated_record", "corrupt_record", "unsupported_link_type", *defrag.FRAGMENT_REASONS,
)

_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
_IPV6_EXT = {0: dpkt.ip6.IP6OptsHeader, 43: dpkt.ip6.IP6RoutingHeader, 44: dpkt.ip6.IP6FragmentHeader,
             51: dpkt.ip6.IP6AHHeader, 60: dpkt.ip6.IP6OptsHeader}


def read_packets(
    path: str | os.PathLike[str], *, reader: str = "auto", chunk_packets: int = 65536
) -> Iterator[PacketBatch]:
    """Decoded TCP/UDP packets of the capture at ``path``: one batch per ``chunk_packets`` records.

    ``reader`` is one of :data:`READERS`. Raises :class:`CaptureFormatError` when the file is not
    a readable capture or its link type is not supported; a truncated or corrupt record later in
    the file ends reading with a warning, counted in the last batch's ``skipped``.
    """
    check_choice("reader", reader, READERS)
    check_positive_int("chunk_packets", chunk_packets)
    fragments = defrag.Defragmenter()
    if reader == "scapy":
        yield from _read_scapy(os.fspath(path), chunk_packets, fragments)
    else:
        for chunk in capture.iter_records(path, chunk_packets):
            yield _decode_chunk(chunk, fragments, fast=reader == "auto")
    fragments.finish()
    left = +fragments.take_skipped()
    if left:  # datagrams never completed: their fragments are counted in a last, empty batch
        yield PacketBatch.empty(left)


def _reassemble(fragment: defrag.Fragment, fragments: defrag.Defragmenter, ts_ns: int,
                decode: Callable[[bytes, int], tuple | str | defrag.Fragment]) -> tuple[tuple, bytes] | str | None:
    """Feed a fragment; when it completes a datagram, the datagram decoded by ``decode`` (as raw IP,
    with the fragment's VLAN id) and its L4 payload; a skip reason; or None while incomplete."""
    packet = fragments.add(fragment, ts_ns)
    if packet is None:
        return None
    decoded = decode(packet, LINKTYPE_RAW)
    if not isinstance(decoded, tuple):  # cannot be a fragment again: offsets and flags are cleared
        return decoded if isinstance(decoded, str) else "fragment_bad"
    at, length = decoded[9], decoded[10]
    return (*decoded[:11], fragment.vlan_id), packet[at : at + length]


# --- decoding a chunk --------------------------------------------------------------------------


def _decode_chunk(chunk: RecordChunk, fragments: defrag.Defragmenter, *, fast: bool) -> PacketBatch:
    n = len(chunk)
    skipped = Counter(chunk.skipped)
    if fast:
        d = fastpath.classify_chunk(chunk)
        status = d.status
    else:
        d = fastpath.FastDecode()
        fastpath.empty_fields(d, n)
        status = np.full(n, fastpath.FALLBACK, np.int8)
    accept = status == fastpath.ACCEPT
    fallback = np.flatnonzero(status == fastpath.FALLBACK)
    decoded_by = Counter({"fast": n - len(fallback), "dpkt": len(fallback)})
    for reason, code in fastpath.SKIP_CODE.items():
        count = int(np.count_nonzero(status == code))
        if count:
            skipped[reason] += count
    buf = chunk.buf
    reassembled: dict[int, bytes] = {}  # row -> L4 payload of the datagram it completed
    for i in fallback.tolist():
        start = int(chunk.offset[i])
        decoded = decode_frame_dpkt(buf[start : start + int(chunk.caplen[i])].tobytes(), int(chunk.linktype[i]))
        if isinstance(decoded, defrag.Fragment):
            decoded = _reassemble(decoded, fragments, int(chunk.ts_ns[i]), decode_frame_dpkt)
            if decoded is None:
                continue
            if not isinstance(decoded, str):
                decoded, reassembled[i] = decoded
        if isinstance(decoded, str):
            skipped[decoded] += 1
            continue
        version, src, dst, proto, sport, dport, flags, seq, ip_bytes, payload_at, payload_len, vlan = decoded
        accept[i] = True
        d.vlan_id[i] = vlan
        d.ip_version[i] = version
        d.src_addr[i] = np.frombuffer(src, np.uint8)
        d.dst_addr[i] = np.frombuffer(dst, np.uint8)
        d.protocol[i] = proto
        d.src_port[i] = sport
        d.dst_port[i] = dport
        d.tcp_flags[i] = flags
        d.tcp_seq[i] = seq
        d.ip_bytes[i] = ip_bytes
        d.payload_offset[i] = start + payload_at
        d.payload_len[i] = payload_len
    if len(chunk):
        fragments.expire(int(chunk.ts_ns.max()))
    skipped.update(fragments.take_skipped())
    if accept.all():
        take = slice(None)
    else:
        take = np.flatnonzero(accept)
    if reassembled:
        take, buf = np.flatnonzero(accept), _payload_buffer(buf, d, np.flatnonzero(accept), reassembled)
    return PacketBatch(
        ts_ns=chunk.ts_ns[take],
        frame_index=chunk.frame_index[take],
        ip_version=d.ip_version[take],
        src_addr=d.src_addr[take],
        dst_addr=d.dst_addr[take],
        protocol=d.protocol[take],
        src_port=d.src_port[take],
        dst_port=d.dst_port[take],
        tcp_flags=d.tcp_flags[take],
        tcp_seq=d.tcp_seq[take],
        ip_bytes=d.ip_bytes[take],
        payload_offset=d.payload_offset[take],
        payload_len=d.payload_len[take],
        data=buf,
        vlan_id=d.vlan_id[take],
        skipped=skipped,
        decoded_by=+decoded_by,
    )


def _payload_buffer(buf: np.ndarray, d: fastpath.FastDecode, rows: np.ndarray, reassembled: dict[int, bytes]) -> np.ndarray:
    """A buffer holding the payloads of ``rows`` (pointing ``d.payload_offset`` into it): the
    capture's bytes, and those of reassembled datagrams, which live outside the capture buffer.
    Only chunks that completed a datagram pay for this copy."""
    parts = []
    pos = 0
    for i in rows.tolist():
        piece = reassembled.get(i)
        if piece is None:
            start = int(d.payload_offset[i])
            piece = buf[start : start + int(d.payload_len[i])]
        parts.append(piece if isinstance(piece, bytes) else piece.tobytes())
        d.payload_offset[i] = pos
        pos += len(parts[-1])
    return np.frombuffer(b"".join(parts), np.uint8)


def _hdr(cls: type, buf: bytes):
    """Parse only the fixed header of a dpkt class (no automatic decoding of the layers above)."""
    if len(buf) < cls.__hdr_len__:
        raise dpkt.NeedData(f"{cls.__name__}: {len(buf)} of {cls.__hdr_len__} header bytes")
    obj = cls.__new__(cls)
    dpkt.Packet.unpack(obj, buf)
    return obj


def decode_frame_dpkt(frame: bytes, linktype: int) -> tuple | str:
    """Decode one captured frame with dpkt: the reference decoder.

    Returns ``(ip_version, src16, dst16, protocol, src_port, dst_port, tcp_flags, tcp_seq,
    ip_bytes, payload_start, payload_len, vlan_id)`` with ``payload_start`` relative to the frame
    and ``vlan_id`` the outermost 802.1Q tag's id (0 when untagged), or the reason the frame is
    skipped.
    """
    try:
        vlan = [0]
        decoded = _decode_dpkt(frame, linktype, vlan)
    except dpkt.NeedData:
        return "truncated_header"
    if isinstance(decoded, tuple):
        return (*decoded, vlan[0])
    return _with_vlan(decoded, vlan[0])


def _with_vlan(decoded: defrag.Fragment | str, vlan: int) -> defrag.Fragment | str:
    """A fragment belongs to a datagram of its VLAN (the key) and gives the datagram its VLAN id."""
    if isinstance(decoded, str) or not vlan:
        return decoded
    return dataclasses.replace(decoded, key=decoded.key + vlan.to_bytes(2, "big"), vlan_id=vlan)


def _decode_dpkt(frame: bytes, linktype: int, vlan: list[int]) -> tuple | str:
    n = len(frame)
    if linktype == LINKTYPE_ETHERNET:
        eth = _hdr(dpkt.ethernet.Ethernet, frame)
        ip_start, ethertype = 14, eth.type
        if ethertype in _VLAN_TYPES:
            for depth in range(2):
                tag = _hdr(dpkt.ethernet.VLANtag8021Q, frame[ip_start:])
                if depth == 0:
                    vlan[0] = tag.id
                ip_start, ethertype = ip_start + 4, tag.type
                if ethertype != 0x8100 or depth == 1:
                    break
    elif linktype == LINKTYPE_LINUX_SLL:
        ip_start, ethertype = 16, _hdr(dpkt.sll.SLL, frame).ethtype
    elif linktype == LINKTYPE_LINUX_SLL2:
        ip_start, ethertype = 20, _hdr(dpkt.sll2.SLL2, frame).ethtype
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        _hdr(dpkt.loopback.Loopback, frame)  # checks the length; the family's byte order varies
        family_le, family_be = struct.unpack_from("<I", frame)[0], struct.unpack_from(">I", frame)[0]
        ip_start = 4
        if 2 in (family_le, family_be):
            ethertype = 0x0800
        elif family_le in _AF_INET6 or family_be in _AF_INET6:
            ethertype = 0x86DD
        else:
            ethertype = 0
    elif linktype in RAW_LINKTYPES:
        if n < 1:
            return "truncated_header"
        ip_start, version = 0, frame[0] >> 4
        ethertype = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
    else:
        raise CaptureFormatError(f"unsupported link type {linktype}")  # the walker filters these
    if ethertype == 0x0800:
        return _decode_ipv4(frame, ip_start)
    if ethertype == 0x86DD:
        return _decode_ipv6(frame, ip_start)
    return "non_ip"


def _decode_ipv4(frame: bytes, ip_start: int) -> tuple | str:
    n = len(frame)
    ip = _hdr(dpkt.ip.IP, frame[ip_start:])
    header_len = ip.hl * 4
    if ip.v != 4 or header_len < 20 or (ip.len and ip.len < header_len):
        return "bad_ip_header"
    if n - ip_start < header_len:
        return "truncated_header"
    if ip.p == dpkt.ip.IP_PROTO_ICMP:
        return "icmp"
    if ip.p not in (dpkt.ip.IP_PROTO_TCP, dpkt.ip.IP_PROTO_UDP):
        return "other_ip_protocol"
    if ip.mf or ip.offset:
        return defrag.ipv4_fragment(frame, ip_start, header_len, ip.len)
    # A zero total length (TCP segmentation offload) means "all that was captured".
    ip_bytes = ip.len or n - ip_start
    ip_end = min(n, ip_start + ip_bytes)
    return _decode_l4(frame, 4, IPV4_MAPPED_PREFIX + ip.src, IPV4_MAPPED_PREFIX + ip.dst, ip.p,
                      ip_start + header_len, ip_end, ip_bytes)


def _decode_ipv6(frame: bytes, ip_start: int) -> tuple | str:
    n = len(frame)
    ip6 = _hdr(dpkt.ip6.IP6, frame[ip_start:])
    if ip6.v != 6:
        return "bad_ip_header"
    ip_bytes = 40 + ip6.plen if ip6.plen else n - ip_start  # 0: jumbogram or offload
    ip_end = min(n, ip_start + ip_bytes)
    nxt, at, announced_at = ip6.nxt, ip_start + 40, ip_start + 6
    while nxt in _IPV6_EXT:
        if ip_end - at < 8:
            return "truncated_header"
        ext = _hdr(_IPV6_EXT[nxt], frame[at:ip_end])
        if nxt == 44:
            if ext.nxt == 58:
                return "icmp"
            if ext.nxt not in (dpkt.ip.IP_PROTO_TCP, dpkt.ip.IP_PROTO_UDP) and ext.nxt not in _IPV6_EXT:
                return "other_ip_protocol"
            return defrag.ipv6_fragment(frame, ip_start, ip_bytes, at, announced_at)
        if nxt == 51:
            length = (ext.len + 2) * 4
        else:
            length = (ext.len + 1) * 8
        nxt, at, announced_at = ext.nxt, at + length, at
        if at > ip_end:
            return "truncated_header"
    if nxt == 58:
        return "icmp"
    if nxt not in (dpkt.ip.IP_PROTO_TCP, dpkt.ip.IP_PROTO_UDP):
        return "other_ip_protocol"
    return _decode_l4(frame, 6, ip6.src, ip6.dst, nxt, at, ip_end, ip_bytes)


def _decode_l4(frame: bytes, version: int, src: bytes, dst: bytes, proto: int, l4: int, ip_end: int,
               ip_bytes: int) -> tuple | str:
    segment = frame[l4:ip_end]
    if proto == dpkt.ip.IP_PROTO_TCP:
        tcp = _hdr(dpkt.tcp.TCP, segment)
        header_len = tcp.off * 4
        if header_len < 20:
            return "bad_tcp_header"
        if len(segment) < header_len:
            return "truncated_header"
        flags, seq = tcp.flags & 0xFF, tcp.seq
    else:
        tcp = _hdr(dpkt.udp.UDP, segment)
        header_len, flags, seq = 8, 0, 0
    return (version, src, dst, proto, tcp.sport, tcp.dport, flags, seq, ip_bytes, l4 + header_len,
            len(segment) - header_len)


# --- scapy: the independent cross-check -------------------------------------------------------


def _read_scapy(path: str, chunk_packets: int, fragments: defrag.Defragmenter) -> Iterator[PacketBatch]:
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
            if linktype not in capture.SUPPORTED_LINKTYPES:
                raise CaptureFormatError(f"{path}: unsupported link type {linktype}")
            if len(data) < caplen:
                skipped["truncated_record"] += 1
                break
            decoded = _decode_scapy(bytes(data), linktype)
            payload = None
            if isinstance(decoded, defrag.Fragment):
                decoded = _reassemble(decoded, fragments, ts_ns, _decode_scapy)
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
        if ethertype in _VLAN_TYPES:
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
        ethertype = 0x0800 if 2 in families else 0x86DD if families & set(_AF_INET6) else 0
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
            return _with_vlan(defrag.ipv4_fragment(frame, ip_start, header_len, ip.len), vlan)
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
            return _with_vlan(nh, vlan)
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
    while nh in _IPV6_EXT:
        if ip_end - at < 8:
            return "truncated_header", at
        if nh == 44:
            frag = IPv6ExtHdrFragment(frame[at : at + 8])
            if frag.nh == 58:
                return "icmp", at
            if frag.nh not in (6, 17) and frag.nh not in _IPV6_EXT:
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
