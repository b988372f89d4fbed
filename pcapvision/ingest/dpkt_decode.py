"""The dpkt decoder: one captured frame -> the fields of its IPv4/IPv6 TCP/UDP packet, or a skip reason.

The reference decoder (reader ``dpkt``), also used by reader ``auto`` for the frames the fast
path of :mod:`pcapvision.ingest.fastpath` hands back. The rules are in :mod:`pcapvision.ingest.readers`.
"""

from __future__ import annotations

import dataclasses
import struct

import dpkt

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import defrag
from pcapvision.ingest.constants import (
    IPV4_MAPPED_PREFIX,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    RAW_LINKTYPES,
    VLAN_ETHERTYPES,
)

__all__ = ["AF_INET6", "IPV6_EXT", "decode_frame_dpkt", "with_vlan"]

AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
IPV6_EXT = {0: dpkt.ip6.IP6OptsHeader, 43: dpkt.ip6.IP6RoutingHeader, 44: dpkt.ip6.IP6FragmentHeader,
             51: dpkt.ip6.IP6AHHeader, 60: dpkt.ip6.IP6OptsHeader}


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
    return with_vlan(decoded, vlan[0])


def with_vlan(decoded: defrag.Fragment | str, vlan: int) -> defrag.Fragment | str:
    """A fragment belongs to a datagram of its VLAN (the key) and gives the datagram its VLAN id."""
    if isinstance(decoded, str) or not vlan:
        return decoded
    return dataclasses.replace(decoded, key=decoded.key + vlan.to_bytes(2, "big"), vlan_id=vlan)


def _decode_dpkt(frame: bytes, linktype: int, vlan: list[int]) -> tuple | str:
    n = len(frame)
    if linktype == LINKTYPE_ETHERNET:
        eth = _hdr(dpkt.ethernet.Ethernet, frame)
        ip_start, ethertype = 14, eth.type
        if ethertype in VLAN_ETHERTYPES:
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
        elif family_le in AF_INET6 or family_be in AF_INET6:
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
    while nxt in IPV6_EXT:
        if ip_end - at < 8:
            return "truncated_header"
        ext = _hdr(IPV6_EXT[nxt], frame[at:ip_end])
        if nxt == 44:
            if ext.nxt == 58:
                return "icmp"
            if ext.nxt not in (dpkt.ip.IP_PROTO_TCP, dpkt.ip.IP_PROTO_UDP) and ext.nxt not in IPV6_EXT:
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
