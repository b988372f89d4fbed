"""Vectorised decoding of the common case: Ethernet (0-2 VLAN tags), Linux SLL/SLL2 or raw IP,
carrying IPv4 without fragmentation or IPv6 without extension headers, then TCP or UDP.

:func:`classify_chunk` decodes every frame of a :class:`RecordChunk` at once with numpy fancy
indexing into the capture buffer. Each frame ends up accepted (fields filled in), skipped for a
reason it can judge on clean headers (non-IP, ICMP, other protocols, IPv4 fragments), or marked
for the reference (dpkt) decoder: anything truncated, malformed, tunnelled or otherwise unusual.
The rules are those of :func:`pcapvision.ingest.readers.decode_frame_dpkt`, which a test checks.
"""

from __future__ import annotations

import numpy as np

from pcapvision.ingest.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    RAW_LINKTYPES,
    RecordChunk,
)

# Frame status codes in the array returned by classify_chunk.
ACCEPT = 0
FALLBACK = 1
SKIP_REASONS = ("non_ip", "icmp", "other_ip_protocol", "ipv4_fragment")
SKIP_CODE = {reason: 2 + i for i, reason in enumerate(SKIP_REASONS)}

_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSION_HEADERS = (0, 43, 44, 51, 60)
_IPV4_MAPPED_WORD = np.frombuffer(b"\x00\x00\xff\xff", np.uint32)[0]


class _Gather:
    """Big-endian 8/16/32-bit loads at arbitrary byte offsets of a buffer (indices clipped)."""

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        n = buf.shape[0]
        self.n = n
        self._be16 = np.ndarray((max(n - 1, 0),), ">u2", buffer=buf, strides=(1,))
        self._be32 = np.ndarray((max(n - 3, 0),), ">u4", buffer=buf, strides=(1,))
        self._ne32 = np.ndarray((max(n - 3, 0),), np.uint32, buffer=buf, strides=(1,))

    def u8(self, idx: np.ndarray) -> np.ndarray:
        return self.buf[np.minimum(idx, self.n - 1)]

    def u16(self, idx: np.ndarray) -> np.ndarray:
        return self._be16[np.minimum(idx, self.n - 2)].astype(np.int64)

    def u32(self, idx: np.ndarray) -> np.ndarray:
        return self._be32[np.minimum(idx, self.n - 4)].astype(np.uint32)

    def raw32(self, idx: np.ndarray) -> np.ndarray:
        """Four bytes as they lie in memory, as a native uint32 (for copying addresses)."""
        return self._ne32[np.minimum(idx, self.n - 4)]


class FastDecode:
    """Per-frame arrays of one chunk: status plus the fields of accepted frames."""

    __slots__ = ("status", "ip_version", "src_addr", "dst_addr", "protocol", "src_port", "dst_port",
                 "tcp_flags", "tcp_seq", "ip_bytes", "payload_offset", "payload_len")


def classify_chunk(chunk: RecordChunk) -> FastDecode:
    """Decode all frames of ``chunk``; ``status`` is ACCEPT, FALLBACK or a SKIP_CODE value."""
    n = len(chunk)
    out = FastDecode()
    status = np.full(n, FALLBACK, np.int8)
    out.status = status
    if n == 0 or chunk.buf.shape[0] < 4:
        _empty_fields(out, n)
        return out
    g = _Gather(chunk.buf)
    off = chunk.offset
    cap = chunk.caplen
    lt = chunk.linktype

    # --- link layer: where the IP header starts (l3) and the ethertype it announces ---------
    l3 = np.zeros(n, np.int64)
    ethertype = np.full(n, -1, np.int64)  # -1: the fast path cannot tell
    eth = lt == LINKTYPE_ETHERNET
    if eth.any():
        t0 = g.u16(off + 12)
        tag1 = eth & np.isin(t0, _VLAN_TYPES)
        t1 = g.u16(off + 16)
        tag2 = tag1 & (t1 == 0x8100)
        t2 = g.u16(off + 20)
        header = 14 + 4 * tag1 + 4 * tag2
        et = np.where(tag2, t2, np.where(tag1, t1, t0))
        ok = eth & (cap >= header)
        l3 = np.where(ok, header, l3)
        ethertype = np.where(ok, et, ethertype)
    raw = np.isin(lt, tuple(RAW_LINKTYPES)) & (cap >= 1)
    if raw.any():
        version = g.u8(off) >> 4
        ethertype = np.where(raw, np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0)), ethertype)
    sll = (lt == LINKTYPE_LINUX_SLL) & (cap >= 16)
    if sll.any():
        l3 = np.where(sll, 16, l3)
        ethertype = np.where(sll, g.u16(off + 14), ethertype)
    sll2 = (lt == LINKTYPE_LINUX_SLL2) & (cap >= 20)
    if sll2.any():
        l3 = np.where(sll2, 20, l3)
        ethertype = np.where(sll2, g.u16(off), ethertype)
    known = ethertype >= 0
    status[known & (ethertype != 0x0800) & (ethertype != 0x86DD)] = SKIP_CODE["non_ip"]

    ip = off + l3
    ip_cap = cap - l3  # captured bytes from the IP header on
    b0 = g.u8(ip)

    # --- IPv4 ---------------------------------------------------------------------------------
    v4 = known & (ethertype == 0x0800) & (ip_cap >= 20)
    ihl4 = (b0 & 0x0F).astype(np.int64) * 4
    total = g.u16(ip + 2)
    v4 &= ((b0 >> 4) == 4) & (ihl4 >= 20) & (ip_cap >= ihl4) & (total >= ihl4)  # total 0 (TSO): dpkt
    proto4 = g.u8(ip + 9)
    frag = (g.u16(ip + 6) & 0x3FFF) != 0
    status[v4 & frag] = SKIP_CODE["ipv4_fragment"]
    v4 &= ~frag

    # --- IPv6 without extension headers ----------------------------------------------------------
    v6 = known & (ethertype == 0x86DD) & (ip_cap >= 40)
    plen = g.u16(ip + 4)
    nh6 = g.u8(ip + 6)
    v6 &= ((b0 >> 4) == 6) & (plen > 0) & ~np.isin(nh6, _IPV6_EXTENSION_HEADERS)

    proto = np.where(v4, proto4, nh6).astype(np.uint8)
    is_ip = v4 | v6
    icmp = is_ip & np.where(v4, proto == 1, proto == 58)
    status[icmp] = SKIP_CODE["icmp"]
    tcp = is_ip & (proto == 6)
    udp = is_ip & (proto == 17)
    status[is_ip & ~icmp & ~tcp & ~udp] = SKIP_CODE["other_ip_protocol"]

    # --- TCP / UDP ------------------------------------------------------------------------------
    ip_bytes = np.where(v4, total, 40 + plen)
    l4 = l3 + np.where(v4, ihl4, 40)
    ip_end = np.minimum(cap, l3 + ip_bytes)  # IP length bounds the payload: padding is not payload
    avail = ip_end - l4
    doff = (g.u8(off + l4 + 12) >> 4).astype(np.int64) * 4
    tcp &= (avail >= 20) & (doff >= 20) & (avail >= doff)
    udp &= avail >= 8
    accept = tcp | udp
    status[accept] = ACCEPT

    l4_at = off + l4
    out.ip_version = np.where(v4, 4, 6).astype(np.uint8)
    out.protocol = proto
    out.src_port = g.u16(l4_at).astype(np.uint16)
    out.dst_port = g.u16(l4_at + 2).astype(np.uint16)
    out.tcp_flags = np.where(tcp, g.u8(l4_at + 13), 0).astype(np.uint8)
    out.tcp_seq = np.where(tcp, g.u32(l4_at + 4), 0).astype(np.uint32)
    out.ip_bytes = ip_bytes.astype(np.int32)
    header_len = np.where(tcp, doff, 8)
    out.payload_offset = l4_at + header_len
    out.payload_len = (avail - header_len).astype(np.int32)
    out.src_addr = _addresses(g, ip, v4, 12, 8)
    out.dst_addr = _addresses(g, ip, v4, 16, 24)
    return out


def _addresses(g: _Gather, ip: np.ndarray, v4: np.ndarray, at4: int, at6: int) -> np.ndarray:
    """(n, 16) uint8 addresses: IPv4-mapped from offset ``at4`` or IPv6 from ``at6``."""
    n = ip.shape[0]
    words = np.empty((n, 4), np.uint32)
    words[:, 0] = np.where(v4, 0, g.raw32(ip + at6))
    words[:, 1] = np.where(v4, 0, g.raw32(ip + at6 + 4))
    words[:, 2] = np.where(v4, _IPV4_MAPPED_WORD, g.raw32(ip + at6 + 8))
    words[:, 3] = np.where(v4, g.raw32(ip + at4), g.raw32(ip + at6 + 12))
    return words.view(np.uint8).reshape(n, 16)


def _empty_fields(out: FastDecode, n: int) -> None:
    out.ip_version = np.zeros(n, np.uint8)
    out.protocol = np.zeros(n, np.uint8)
    out.src_port = np.zeros(n, np.uint16)
    out.dst_port = np.zeros(n, np.uint16)
    out.tcp_flags = np.zeros(n, np.uint8)
    out.tcp_seq = np.zeros(n, np.uint32)
    out.ip_bytes = np.zeros(n, np.int32)
    out.payload_offset = np.zeros(n, np.int64)
    out.payload_len = np.zeros(n, np.int32)
    out.src_addr = np.zeros((n, 16), np.uint8)
    out.dst_addr = np.zeros((n, 16), np.uint8)
