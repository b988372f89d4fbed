"""Capture readers: a capture file in, a stream of :class:`PacketBatch` out.

Three readers yield the same packets and the same skip counts:

``auto``
    the container walker of :mod:`pcapvision.ingest.capture` and the compiled decoder of
    :mod:`pcapvision.ingest.fastpath`; frames the fast path does not handle go to dpkt
    (:mod:`pcapvision.ingest.dpkt_decode`).
``dpkt``
    the same container walker; dpkt decodes every frame (the reference decoder,
    :mod:`pcapvision.ingest.dpkt_decode`).
``scapy``
    scapy's own pcap/pcapng readers and dissectors (:mod:`pcapvision.ingest.scapy_reader`): an
    independent cross-check, slow.

Decoding rules (all readers): the link layer gives an IPv4 or IPv6 header (else ``non_ip``);
IPv4 and IPv6 fragments of TCP/UDP datagrams are reassembled (:mod:`pcapvision.ingest.defrag`;
what could not be is counted by reason, ``fragment_*``);
ICMP/ICMPv6 count as ``icmp``, other protocols as ``other_ip_protocol``; headers cut short by the
capture or by the IP length count as ``truncated_header``, impossible ones as ``bad_ip_header``
or ``bad_tcp_header``. The L4 payload is what follows the TCP/UDP header up to the end of the IP
packet (its length field; all captured bytes when it is 0), bounded by what was captured.

This module reads a capture with the reader asked for and decodes each chunk of records.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator

import numpy as np

from pcapvision.ingest import capture, defrag, fastpath
from pcapvision.ingest.capture import capture_info
from pcapvision.ingest.constants import READERS
from pcapvision.ingest.dpkt_decode import decode_frame_dpkt
from pcapvision.ingest.packets import PacketBatch
from pcapvision.ingest.records import RecordChunk
from pcapvision.ingest.scapy_reader import read_scapy
from pcapvision.validation import check_choice, check_positive_int

__all__ = ["READERS", "SKIP_REASONS", "capture_info", "read_packets"]

log = logging.getLogger(__name__)

SKIP_REASONS = (
    *fastpath.SKIP_REASONS, "truncated_header", "bad_ip_header", "bad_tcp_header",
    "truncated_record", "corrupt_record", "unsupported_link_type", *defrag.FRAGMENT_REASONS,
)


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
        yield from read_scapy(os.fspath(path), chunk_packets, fragments)
    else:
        for chunk in capture.iter_records(path, chunk_packets):
            yield _decode_chunk(chunk, fragments, fast=reader == "auto")
    fragments.finish()
    left = +fragments.take_skipped()
    if left:  # datagrams never completed: their fragments are counted in a last, empty batch
        yield PacketBatch.empty(left)

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
            decoded = defrag.decode_reassembled(decoded, fragments, int(chunk.ts_ns[i]), decode_frame_dpkt)
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
