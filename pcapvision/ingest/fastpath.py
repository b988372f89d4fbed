"""Compiled decoding of the common case: Ethernet (0-2 VLAN tags), Linux SLL/SLL2 or raw IP,
carrying IPv4 without fragmentation or IPv6 without extension headers, then TCP or UDP.

:func:`classify_chunk` decodes every frame of a :class:`RecordChunk` in one compiled loop
(:mod:`.jit`). Each frame ends up accepted, skipped for a reason it can judge on clean headers
(non-IP, ICMP, other protocols), or marked for the reference (dpkt) decoder: anything truncated,
malformed, tunnelled, fragmented (reassembly) or otherwise unusual.
The rules are those of :func:`pcapvision.ingest.dpkt_decode.decode_frame_dpkt`, which a test checks.
"""

from __future__ import annotations

import numpy as np

from pcapvision.ingest.constants import (
    IPV4_MAPPED_PREFIX,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    RAW_LINKTYPES,
    VLAN_ETHERTYPES,
)
from pcapvision.ingest.jit import compiled, compiled_inline
from pcapvision.ingest.packets import PROTO_TCP, PROTO_UDP
from pcapvision.ingest.records import RecordChunk

# Frame status codes in the array returned by classify_chunk.
ACCEPT = 0
FALLBACK = 1
SKIP_REASONS = ("non_ip", "icmp", "other_ip_protocol")
SKIP_CODE = {reason: 2 + i for i, reason in enumerate(SKIP_REASONS)}
SKIP_NON_IP, SKIP_ICMP, SKIP_OTHER = (SKIP_CODE[reason] for reason in SKIP_REASONS)

_RAW = tuple(sorted(RAW_LINKTYPES))
_IPV6_EXTENSION_HEADERS = (0, 43, 44, 51, 60)
IPV4_MAPPED_PREFIX_U8 = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)


class FastDecode:
    """Per-frame arrays of one chunk: status plus the fields of accepted frames."""

    __slots__ = ("status", "ip_version", "src_addr", "dst_addr", "protocol", "src_port", "dst_port",
                 "tcp_flags", "tcp_seq", "ip_bytes", "payload_offset", "payload_len", "vlan_id")


def classify_chunk(chunk: RecordChunk) -> FastDecode:
    """Decode all frames of ``chunk``; ``status`` is ACCEPT, FALLBACK or a SKIP_CODE value."""
    n = len(chunk)
    out = FastDecode()
    empty_fields(out, n)
    out.status = np.full(n, FALLBACK, np.int8)
    if n:
        _classify_frames(chunk.buf, chunk.offset, chunk.caplen, chunk.linktype, out.status, out.ip_version,
                         out.src_addr, out.dst_addr, out.protocol, out.src_port, out.dst_port, out.tcp_flags,
                         out.tcp_seq, out.ip_bytes, out.payload_offset, out.payload_len, out.vlan_id)
    return out


@compiled_inline  # called per field: a call passing the buffer would update its reference count
def _be16(buf: np.ndarray, at: int) -> int:
    return (np.int64(buf[at]) << 8) | np.int64(buf[at + 1])


@compiled
def _classify_frames(buf, off, cap, lt, status, ip_version, src_addr, dst_addr, protocol, src_port, dst_port,
                     tcp_flags, tcp_seq, ip_bytes, payload_offset, payload_len, vlan_id):  # pragma: no cover - compiled
    """Per frame: the link layer, IP header and TCP/UDP header; fields written for accepted frames.

    Each header is read from a fixed-size window (link 24 bytes, IP 40, L4 16) that must lie inside
    ``buf``; a frame whose window would not is left to the reference decoder. Lengths are judged
    against the captured length, and the IP total length bounds the payload (no Ethernet padding).
    """
    size = buf.shape[0]
    for i in range(off.shape[0]):
        o = off[i]
        c = cap[i]
        t = lt[i]
        if o < 0 or o > size - 24:
            continue
        # --- link layer: where the IP header starts (l3) and the ethertype it announces ---------
        l3 = 0
        ethertype = -1  # -1: the fast path cannot tell
        vlan = 0
        if t == LINKTYPE_ETHERNET:
            et = _be16(buf, o + 12)
            header = 14
            if et == VLAN_ETHERTYPES[0] or et == VLAN_ETHERTYPES[1] or et == VLAN_ETHERTYPES[2]:
                vlan = _be16(buf, o + 14) & 0x0FFF  # the outermost tag's id
                inner = _be16(buf, o + 16)
                if inner == VLAN_ETHERTYPES[0]:  # QinQ: a second (802.1Q) tag
                    header = 22
                    et = _be16(buf, o + 20)
                else:
                    header = 18
                    et = inner
            if c >= header:
                l3 = header
                ethertype = et
        elif t == LINKTYPE_LINUX_SLL:
            if c >= 16:
                l3 = 16
                ethertype = _be16(buf, o + 14)
        elif t == LINKTYPE_LINUX_SLL2:
            if c >= 20:
                l3 = 20
                ethertype = _be16(buf, o)
        elif t in _RAW:
            if c >= 1:
                version = buf[o] >> 4
                ethertype = 0x0800 if version == 4 else (0x86DD if version == 6 else 0)
        if ethertype < 0:
            continue
        if ethertype != 0x0800 and ethertype != 0x86DD:
            status[i] = SKIP_NON_IP
            continue

        ip = o + l3
        ip_cap = c - l3  # captured bytes from the IP header on
        if ip > size - 40:
            continue
        version = buf[ip] >> 4
        if ethertype == 0x0800:
            ihl = np.int64(buf[ip] & 0x0F) * 4
            ipb = _be16(buf, ip + 2)
            # Total length 0 (TSO) and fragments (MF or an offset: reassembly) go to dpkt.
            v4 = (version == 4 and ip_cap >= 20 and ihl >= 20 and ip_cap >= ihl and ipb >= ihl
                  and (buf[ip + 6] & 0x3F) == 0 and buf[ip + 7] == 0)
            if not v4:
                continue
            proto = np.int64(buf[ip + 9])
            l4 = l3 + ihl
            if proto == 1:
                status[i] = SKIP_ICMP
                continue
        else:  # IPv6 without extension headers
            plen = _be16(buf, ip + 4)
            proto = np.int64(buf[ip + 6])
            if not (version == 6 and ip_cap >= 40 and plen > 0) or proto in _IPV6_EXTENSION_HEADERS:
                continue
            v4 = False
            ipb = 40 + plen
            l4 = l3 + 40
            if proto == 58:
                status[i] = SKIP_ICMP
                continue
        if proto != PROTO_TCP and proto != PROTO_UDP:
            status[i] = SKIP_OTHER
            continue

        # --- TCP / UDP ------------------------------------------------------------------------------
        avail = min(c, l3 + ipb) - l4
        l4_at = o + l4
        if l4_at > size - 16:
            continue
        if proto == PROTO_TCP:
            header_len = np.int64(buf[l4_at + 12] >> 4) * 4
            if not (avail >= 20 and header_len >= 20 and avail >= header_len):
                continue
            tcp_flags[i] = buf[l4_at + 13]
            tcp_seq[i] = (_be16(buf, l4_at + 4) << 16) | _be16(buf, l4_at + 6)
        else:
            if avail < 8:
                continue
            header_len = 8
        status[i] = ACCEPT
        protocol[i] = proto
        ip_version[i] = 4 if v4 else 6
        src_port[i] = _be16(buf, l4_at)
        dst_port[i] = _be16(buf, l4_at + 2)
        ip_bytes[i] = ipb
        vlan_id[i] = vlan
        payload_offset[i] = l4_at + header_len
        payload_len[i] = avail - header_len
        if v4:
            src_addr[i, :12] = IPV4_MAPPED_PREFIX_U8
            dst_addr[i, :12] = IPV4_MAPPED_PREFIX_U8
            src_addr[i, 12:] = buf[ip + 12 : ip + 16]
            dst_addr[i, 12:] = buf[ip + 16 : ip + 20]
        else:
            src_addr[i] = buf[ip + 8 : ip + 24]
            dst_addr[i] = buf[ip + 24 : ip + 40]


def empty_fields(out: FastDecode, n: int) -> None:
    """Fill ``out`` with zeroed per-frame arrays for ``n`` frames."""
    out.ip_version = np.zeros(n, np.uint8)
    out.protocol = np.zeros(n, np.uint8)
    out.src_port = np.zeros(n, np.uint16)
    out.dst_port = np.zeros(n, np.uint16)
    out.tcp_flags = np.zeros(n, np.uint8)
    out.tcp_seq = np.zeros(n, np.uint32)
    out.ip_bytes = np.zeros(n, np.int32)
    out.payload_offset = np.zeros(n, np.int64)
    out.payload_len = np.zeros(n, np.int32)
    out.vlan_id = np.zeros(n, np.uint16)
    out.src_addr = np.zeros((n, 16), np.uint8)
    out.dst_addr = np.zeros((n, 16), np.uint8)
