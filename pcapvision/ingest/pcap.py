"""pcap files: the file header, and record boundaries walked into :class:`RecordChunk` s.

Record headers are walked, and their timestamps and captured lengths read, by compiled loops
(:mod:`.jit`). A gzip capture is walked in windows of decompressed bytes; a chunk may gather
records of several.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest.constants import SUPPORTED_LINKTYPES
from pcapvision.ingest.jit import compiled, compiled_inline
from pcapvision.ingest.records import (
    ABSURD_CAPLEN,
    CORRUPT,
    END,
    MAX_CHUNK_BYTES,
    MAX_SNAPLEN,
    NEED_MORE,
    OK,
    TRUNCATED,
    RecordChunk,
    stack_windows,
    warn_stop,
)
from pcapvision.ingest.source import GZIP_BLOCK_BYTES, Source

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34


@dataclass
class PcapHeader:
    big_endian: bool
    nanosecond: bool
    snaplen: int
    linktype: int
    version: tuple[int, int]

    @property
    def caplen_limit(self) -> int:
        return min(max(self.snaplen, MAX_SNAPLEN), ABSURD_CAPLEN)


def parse_pcap_header(path: Path, head: bytes) -> PcapHeader:
    if len(head) < 24:
        raise CaptureFormatError(f"{path}: truncated pcap file header ({len(head)} of 24 bytes)")
    for endian, big in (("<", False), (">", True)):
        magic, vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack(endian + "IHHiIII", head[:24])
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            if vmaj != 2:
                raise CaptureFormatError(f"{path}: unsupported pcap version {vmaj}.{vmin}")
            linktype = network & 0xFFFF  # the upper bits carry FCS information
            if linktype not in SUPPORTED_LINKTYPES:
                raise CaptureFormatError(f"{path}: unsupported link type {linktype}")
            return PcapHeader(big, magic == PCAP_MAGIC_NSEC, snaplen, linktype, (vmaj, vmin))
        if magic == PCAP_MAGIC_MODIFIED:
            raise CaptureFormatError(f"{path}: modified (Kuznetzov) pcap format is not supported")
    raise CaptureFormatError(f"{path}: bad pcap magic")  # pragma: no cover - caller checked the magic


class PcapWalker:
    """Finds record boundaries of a pcap body held in a uint8 buffer."""

    def __init__(self, header: PcapHeader):
        self.header = header
        self.limit = header.caplen_limit

    def walk(self, buf: np.ndarray, pos: int, final: bool, max_records: int) -> tuple[np.ndarray, int, str]:
        """Record starts from ``pos``: at most ``max_records``, then the next position and status."""
        end = buf.shape[0]
        # Every record takes at least its 16-byte header: the buffer holds fewer records than
        # (end - pos) // 16 + 1, so a full ``starts`` means max_records were found.
        starts = np.empty(max(0, min(max_records, (end - pos) // 16 + 1)), np.int64)
        n, pos, stop = _walk_records(buf, pos, starts, self.limit, self.header.big_endian)
        starts = starts[:n]
        if pos == end:
            return starts, pos, END
        if stop == STOP_MAX_RECORDS:
            return starts, pos, OK
        if stop == STOP_CAPLEN:
            return starts, pos, CORRUPT
        return starts, pos, (TRUNCATED if final else NEED_MORE)

    def chunk(self, buf: np.ndarray, starts: np.ndarray, first_index: int) -> RecordChunk:
        """A RecordChunk for pcap records starting at ``starts`` in ``buf``."""
        n = starts.shape[0]
        ts_ns = np.zeros(n, np.int64)
        caplen = np.zeros(n, np.int64)
        if n:
            _record_headers(buf, starts, self.header.big_endian, self.header.nanosecond, ts_ns, caplen)
        return RecordChunk(
            buf=buf,
            offset=starts + 16,
            caplen=caplen,
            ts_ns=ts_ns,
            linktype=np.full(n, self.header.linktype, np.int32),
            frame_index=np.arange(first_index, first_index + n, dtype=np.int64),
        )


# Why _walk_records stopped: enough records, a record header with an impossible captured length
# (corrupt), or a record (or its header) running past the end of the buffer (more data needed).
STOP_MAX_RECORDS, STOP_CAPLEN, STOP_PAST_END = 0, 1, 2


@compiled_inline  # called per field: a call passing the buffer would update its reference count
def _u32(buf: np.ndarray, at: int, big_endian: bool) -> int:
    b0, b1, b2, b3 = np.int64(buf[at]), np.int64(buf[at + 1]), np.int64(buf[at + 2]), np.int64(buf[at + 3])
    if big_endian:
        return (b0 << 24) | (b1 << 16) | (b2 << 8) | b3
    return (b3 << 24) | (b2 << 16) | (b1 << 8) | b0


@compiled
def _walk_records(buf, pos, starts, limit, big_endian):  # pragma: no cover - compiled
    """Record starts from ``pos`` into ``starts`` (at most its length): (count, next position, STOP_*)."""
    end = buf.shape[0]
    n = 0
    while n < starts.shape[0]:
        if pos > end - 16:
            return n, pos, STOP_PAST_END
        caplen = _u32(buf, pos + 8, big_endian)
        if caplen > limit:
            return n, pos, STOP_CAPLEN
        nxt = pos + 16 + caplen
        if nxt > end:
            return n, pos, STOP_PAST_END
        starts[n] = pos
        n += 1
        pos = nxt
    return n, pos, STOP_MAX_RECORDS


@compiled
def _record_headers(buf, starts, big_endian, nanosecond, ts_ns, caplen):  # pragma: no cover - compiled
    """Timestamp (ns) and captured length of the records at ``starts`` (headers outside ``buf``: 0)."""
    end = buf.shape[0]
    for i in range(starts.shape[0]):
        at = starts[i]
        if at < 0 or at > end - 16:
            continue
        sec = _u32(buf, at, big_endian)
        frac = _u32(buf, at + 4, big_endian)
        ts_ns[i] = sec * 1_000_000_000 + (frac if nanosecond else frac * 1000)
        caplen[i] = _u32(buf, at + 8, big_endian)


def iter_pcap(path: Path, source: Source, head: bytes, chunk_records: int) -> Iterator[RecordChunk]:
    header = parse_pcap_header(path, head)
    walker = PcapWalker(header)
    index = 0
    if source.mapped is not None:
        buf = source.mapped
        pos = 24
        while True:
            starts, pos, status = walker.walk(buf, pos, True, chunk_records)
            chunk = walker.chunk(buf, starts, index)
            index += len(chunk)
            if status in (TRUNCATED, CORRUPT):
                warn_stop(path, status, index, chunk.skipped)
            if len(chunk) or chunk.skipped:
                yield chunk
            if status != OK:
                return
        return
    # gzip: walk windows of decompressed bytes; a chunk may gather records of several windows.
    leftover = head[24:]
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    pending_count = pending_bytes = 0
    final = False
    while not final:
        block, _clean = source.read(GZIP_BLOCK_BYTES)
        final = not block
        window = np.frombuffer(leftover + block, np.uint8)
        del block, leftover  # the window holds their bytes
        pos = 0
        while True:
            starts, pos, status = walker.walk(window, pos, final, chunk_records - pending_count)
            if starts.shape[0]:
                if not pending or pending[-1][0] is not window:
                    pending_bytes += window.shape[0]
                pending.append((window, starts))
                pending_count += starts.shape[0]
            if (pending_count == chunk_records or pending_bytes >= MAX_CHUNK_BYTES or status in (TRUNCATED, CORRUPT)
                    or (final and pending)):
                chunk = _merge_pcap_pieces(walker, pending, index)
                index += len(chunk)
                pending, pending_count, pending_bytes = [], 0, 0
                if status in (TRUNCATED, CORRUPT):
                    warn_stop(path, status, index, chunk.skipped)
                    yield chunk
                    return
                yield chunk
                del chunk  # do not hold a handed-on chunk while the next one fills
                if status == OK:
                    continue
            break
        leftover = window[pos:].tobytes()


def _merge_pcap_pieces(walker: PcapWalker, pieces: list[tuple[np.ndarray, np.ndarray]], index: int) -> RecordChunk:
    if not pieces:
        return walker.chunk(np.zeros(0, np.uint8), np.zeros(0, np.int64), index)
    buf, base = stack_windows(pieces)
    starts = np.concatenate([s + base[id(w)] for w, s in pieces])
    return walker.chunk(buf, starts, index)
