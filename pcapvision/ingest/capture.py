"""Capture containers: pcap and pcapng, plain or gzip-compressed, walked into chunks of records.

A :class:`RecordChunk` says where each captured frame lies in a byte buffer, with its capture
timestamp (ns since the epoch), link type and record number; decoding the frames is the job of
:mod:`pcapvision.ingest.fastpath` and :mod:`pcapvision.ingest.readers`.

Uncompressed files are memory-mapped and the chunks' buffers are views of the map (zero copy);
gzip files (detected by magic bytes) are decompressed as a stream, a few MiB at a time.

Walking plain pcap record headers in a Python loop costs ~0.5 us a record. Where records are
small, :meth:`_PcapWalker._speculate` instead guesses every record start in a span at once
(positions where the high 16 bits of the timestamp's seconds match those of the record at hand,
found with a vectorised scan of every byte), computes where each guess says the next record
starts, and keeps the prefix of guesses that chain from the known record: each kept record is the
true successor of the one before, so the result is exact; where the chain breaks (timestamps
crossing a 2**16 s boundary, corrupt records, the end of the data) the loop takes over.
pcapng blocks are located by a loop and their enhanced packet blocks decoded together.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.errors import CaptureFormatError, InputNotFoundError

log = logging.getLogger(__name__)

# Link types (https://www.tcpdump.org/linktypes.html) that the decoders understand.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on most BSDs, seen in some pcap files
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
RAW_LINKTYPES = frozenset({LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})
SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2} | RAW_LINKTYPES
)

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"

# pcapng block types
BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 1, 2, 3, 6

# libpcap's largest snapshot length; a record claiming more than this (or than a file's larger
# snaplen) is corrupt.
MAX_SNAPLEN = 262144
# Records longer than any snaplen could allow mean a corrupt header, not a jumbo frame.
ABSURD_CAPLEN = 1 << 24

GZIP_BLOCK_BYTES = 8 << 20  # decompressed bytes read from a gzip stream at a time
GZIP_INPUT_BYTES = 1 << 20  # compressed bytes read from the file at a time
ZLIB_STEP_BYTES = 1 << 14  # ...and fed to the decompressor at a time
# A chunk of a gzip capture is handed on once its windows hold this many decompressed bytes,
# even with fewer than chunk_records records: memory stays near a few windows whatever the
# record sizes.
MAX_CHUNK_BYTES = 32 << 20
# A pcapng block longer than this is corrupt (no packet can be: see ABSURD_CAPLEN); refusing
# it at once keeps a lying length from making the reader buffer gigabytes waiting for its end.
MAX_BLOCK_BYTES = (1 << 24) + 4096

# Walk status
_OK, _END, _NEED_MORE, _TRUNCATED, _CORRUPT = "ok", "end", "need_more", "truncated", "corrupt"


@dataclass
class RecordChunk:
    """Captured frames of up to ``chunk_records`` consecutive records, located in ``buf``."""

    buf: np.ndarray  # uint8 buffer holding the frames
    offset: np.ndarray  # int64, start of each frame in ``buf``
    caplen: np.ndarray  # int64, captured bytes of each frame
    ts_ns: np.ndarray  # int64, capture time in ns since the epoch
    linktype: np.ndarray  # int32, link type of each frame
    frame_index: np.ndarray  # int64, 0-based record number in the file
    skipped: Counter[str] = field(default_factory=Counter)  # records not returned, by reason

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def frame(self, i: int) -> bytes:
        start = int(self.offset[i])
        return self.buf[start : start + int(self.caplen[i])].tobytes()


# --- opening and format detection ------------------------------------------------------------


class _Source:
    """The decompressed bytes of a capture: one mapped buffer, or a gzip stream read in blocks.

    gzip is decompressed incrementally (a MiB of input at a time), so a truncated or corrupt
    stream still yields every byte before the break; concatenated gzip members are read in turn.
    """

    def __init__(self, path: Path):
        self.path = path
        self.compressed = False
        self.clean = True  # False once the gzip stream broke off or turned corrupt
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        head = self._fh.read(2)
        if head == GZIP_MAGIC:
            self.compressed = True
            self._fh.seek(0)
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._buf, self._off = b"", 0  # compressed input read from the file, and how far it is used
            self._step = ZLIB_STEP_BYTES
            self._in_member = False
            self._ended = False
            self.mapped = None
        else:
            size = os.fstat(self._fh.fileno()).st_size
            if size == 0:
                self._fh.close()
                raise CaptureFormatError(f"{path}: empty file, not a capture")
            self.mapped = np.frombuffer(mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
            # The map keeps its own handle; batches keep the map alive as long as they need it.
            self._fh.close()

    def read(self, n: int) -> tuple[bytes, bool]:
        """Next ``n`` decompressed bytes (fewer at the end) and whether the stream is still clean.

        A truncated or corrupt stream returns what was decompressed before the break (input is
        fed in steps, and a step that fails is redone a byte at a time), then ``b""``;
        :attr:`clean` turns False and a warning names the cause.
        """
        out = bytearray()
        while len(out) < n and not self._ended:
            if self._off >= len(self._buf):
                self._buf, self._off = self._fh.read(GZIP_INPUT_BYTES), 0
                if not self._buf:
                    self._ended = True
                    if self._in_member:
                        self._stop("gzip stream is truncated")
                    break
            if not self._in_member:  # gzip allows zero padding between and after members
                head = self._buf[self._off:self._off + ZLIB_STEP_BYTES]
                self._off += len(head) - len(head.lstrip(b"\x00"))
                if self._off >= len(self._buf):
                    continue
                self._in_member = True
            step = memoryview(self._buf)[self._off:self._off + self._step]
            saved = self._z.copy()
            try:
                out += self._z.decompress(step, n - len(out))
            except zlib.error as exc:
                if self._step > 1:  # zlib drops a failing call's output: redo the step byte by byte
                    self._z, self._step = saved, 1
                    continue
                self._stop(f"gzip stream is corrupt ({exc})")
                break
            # At a member's end the rest of the step is unused_data (unconsumed_tail may repeat it).
            left = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            self._off += len(step) - len(left)
            if self._z.eof:  # end of one member; another may follow
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._in_member = False
        return bytes(out), self.clean

    def _stop(self, reason: str) -> None:
        self._ended = True
        self.clean = False
        log.warning("%s: %s; keeping what was read before the break", self.path, reason)

    def close(self) -> None:
        if self.compressed:
            self._fh.close()


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise CaptureFormatError(f"{p}: not a regular file")
    return p


@dataclass
class _PcapHeader:
    big_endian: bool
    nanosecond: bool
    snaplen: int
    linktype: int
    version: tuple[int, int]

    @property
    def caplen_limit(self) -> int:
        return min(max(self.snaplen, MAX_SNAPLEN), ABSURD_CAPLEN)


def _parse_pcap_header(path: Path, head: bytes) -> _PcapHeader:
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
            return _PcapHeader(big, magic == PCAP_MAGIC_NSEC, snaplen, linktype, (vmaj, vmin))
        if magic == PCAP_MAGIC_MODIFIED:
            raise CaptureFormatError(f"{path}: modified (Kuznetzov) pcap format is not supported")
    raise CaptureFormatError(f"{path}: bad pcap magic")  # pragma: no cover - caller checked the magic


def _detect(path: Path, head: bytes) -> str:
    """'pcap' or 'pcapng' from the first bytes, else CaptureFormatError."""
    if not head:
        raise CaptureFormatError(f"{path}: empty file, not a capture")
    if len(head) >= 4:
        le, be = struct.unpack("<I", head[:4])[0], struct.unpack(">I", head[:4])[0]
        if PCAP_MAGIC_USEC in (le, be) or PCAP_MAGIC_NSEC in (le, be) or PCAP_MAGIC_MODIFIED in (le, be):
            return "pcap"
        if le == PCAPNG_SHB:
            return "pcapng"
    archive = archive_kind(head)
    if archive is not None:
        raise CaptureFormatError(f"{path}: {archive}, not a capture; unpack it first")
    raise CaptureFormatError(
        f"{path}: not a pcap or pcapng capture (starts with bytes {head[:4].hex() or 'none'})"
    )


# Archive and compression formats a capture is often shipped in, by their magic bytes (gzip is
# read directly, so a .tar.gz shows up as a tar archive).
_ARCHIVE_MAGICS = (
    (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"), (b"PK\x07\x08", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"Rar!\x1a\x07", "a rar archive"),
    (b"BZh", "a bzip2-compressed file"), (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"), (b"\x04\x22\x4d\x18", "an lz4-compressed file"),
)
HEAD_BYTES = 512  # first bytes read to detect the format (a tar header's magic sits at 257)


def archive_kind(head: bytes) -> str | None:
    """'a zip archive', 'a tar archive'... when ``head`` starts one of the known archives."""
    for magic, kind in _ARCHIVE_MAGICS:
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "a tar archive"
    return None


# --- loads at arbitrary offsets ---------------------------------------------------------------


def gather_rows(buf: np.ndarray, idx: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``width`` bytes at each offset of ``idx`` as an (n, width) uint8 matrix, and a mask of the
    rows that would have run past the end of ``buf`` (their content is not meaningful).

    Copying fixed-size rows through a void-typed view is several times faster in numpy than
    gathering the same bytes one at a time.
    """
    limit = buf.shape[0] - width
    if limit < 0:
        return np.zeros((idx.shape[0], width), np.uint8), np.ones(idx.shape[0], bool)
    rows = np.ndarray((limit + 1,), f"V{width}", buffer=buf, strides=(1,))
    clipped = (idx > limit) | (idx < 0)
    safe = np.clip(idx, 0, limit) if clipped.any() else idx
    return rows[safe].view(np.uint8).reshape(-1, width), clipped


# --- pcap record walking ---------------------------------------------------------------------


class _PcapWalker:
    """Finds record boundaries of a pcap body held in a uint8 buffer."""

    # Guessed spans below this many bytes are walked by the plain loop instead.
    MIN_SPECULATION_BYTES = 1 << 16
    # Guessing scans every byte (~1 ns each); the loop costs ~0.5 us a record whatever its size.
    # Measured here: 80-byte records 4.9 M/s guessing vs 2.3 M/s looping; ~500-byte records about
    # equal. Guess only where records are smaller than this on average.
    SPECULATE_BELOW_BYTES = 600.0
    LOOP_RECORDS = 256
    SCAN_PIECE = 1 << 20

    def __init__(self, header: _PcapHeader):
        self.header = header
        self.limit = header.caplen_limit
        e = ">" if header.big_endian else "<"
        self._u32 = struct.Struct(e + "I")
        self._u4 = np.dtype(e + "u4")
        self.avg_record_bytes = float("inf")  # unknown until the loop has measured it
        self._measured = False
        # Offset of the two high bytes of ts_sec inside a record header.
        self._hi_at = 0 if header.big_endian else 2

    def walk(self, buf: np.ndarray, pos: int, final: bool, max_records: int) -> tuple[np.ndarray, int, str]:
        """Record starts from ``pos``: at most ``max_records``, then the next position and status."""
        end = buf.shape[0]
        pieces: list[np.ndarray] = []
        count = 0
        status = _OK
        while count < max_records:
            want = max_records - count
            speculate = (self._measured and self.avg_record_bytes <= self.SPECULATE_BELOW_BYTES
                         and end - pos >= self.MIN_SPECULATION_BYTES)
            if speculate:
                span = int(want * self.avg_record_bytes * 1.2) + 4096
                starts, pos = self._speculate(buf, pos, min(end, pos + span), want)
                if starts.shape[0]:
                    pieces.append(starts)
                    count += starts.shape[0]
                    if starts.shape[0] >= 64:
                        continue
            # The loop takes over where guessing broke down, for the tail, and for large records
            # (its first call also measures the record size that decides between the two).
            n_loop = want if (self._measured and not speculate) else min(want, self.LOOP_RECORDS)
            before = pos
            starts_list, pos, status = self._loop(buf, pos, end, final, n_loop)
            if starts_list:
                pieces.append(np.array(starts_list, np.int64))
                count += len(starts_list)
                self.avg_record_bytes = max(32.0, (pos - before) / len(starts_list))
                self._measured = True
            if status != _OK:
                break
        starts = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        if status == _OK and pos == end:
            status = _END
        return starts, pos, status

    def _loop(self, buf: np.ndarray, pos: int, end: int, final: bool, max_records: int) -> tuple[list[int], int, str]:
        unpack = self._u32.unpack_from
        view = memoryview(buf)  # struct reads a memoryview faster than a numpy array
        limit = self.limit
        starts: list[int] = []
        append = starts.append
        last_header = end - 16
        left = max_records
        while left:
            if pos > last_header:
                break
            (caplen,) = unpack(view, pos + 8)
            nxt = pos + 16 + caplen
            if caplen > limit or nxt > end:
                break
            append(pos)
            pos = nxt
            left -= 1
        else:
            return starts, pos, _OK
        if pos == end:
            return starts, pos, _END
        if pos <= last_header and unpack(view, pos + 8)[0] > limit:
            return starts, pos, _CORRUPT
        return starts, pos, (_TRUNCATED if final else _NEED_MORE)

    def _speculate(self, buf: np.ndarray, pos: int, stop: int, max_records: int) -> tuple[np.ndarray, int]:
        """Exact record starts in [pos, stop) found by guessing and verifying (see module doc)."""
        end = buf.shape[0]
        hi = self._hi_at
        pattern = buf[pos + hi : pos + hi + 2].view(np.uint16)[0]
        found = []
        for s in range(pos + hi, min(stop, end - 16) + hi, self.SCAN_PIECE):
            e = min(s + self.SCAN_PIECE, min(stop, end - 16) + hi + 1)
            for a in (0, 1):
                m = (e - s - a) // 2
                if m <= 0:
                    continue
                h = np.flatnonzero(buf[s + a : s + a + 2 * m].view(np.uint16) == pattern)
                if h.shape[0]:
                    h *= 2
                    h += s + a - hi
                    found.append(h)
        if not found:
            return np.zeros(0, np.int64), pos
        cand = np.sort(np.concatenate(found))
        cand = cand[(cand >= pos) & (cand <= end - 16)]
        if cand.shape[0] == 0 or cand[0] != pos:
            return np.zeros(0, np.int64), pos
        caplen = self._u32_at(buf, cand + 8)
        nxt = cand + 16 + caplen
        m = cand.shape[0]
        idx = np.searchsorted(cand, nxt)
        hit = idx < m
        hit[hit] = cand[idx[hit]] == nxt[hit]
        # Guesses in payloads are almost never pointed to by another guess; two rounds drop them.
        kept = np.zeros(m, bool)
        kept[0] = True
        kept[idx[hit]] = True
        kept2 = np.zeros(m, bool)
        kept2[0] = True
        kept2[idx[hit & kept]] = True
        starts, nxt, caplen = cand[kept2], nxt[kept2], caplen[kept2]
        # Keep the prefix in which each start is its predecessor's successor.
        good = nxt[:-1] == starts[1:]
        n_ok = starts.shape[0] if good.all() else int(np.argmin(good)) + 1
        # ...whose records are sane and complete; the loop judges the first one that is not.
        bad = (caplen[:n_ok] > self.limit) | (nxt[:n_ok] > end)
        if bad.any():
            n_ok = int(np.argmax(bad))
        n_ok = min(n_ok, max_records)
        if n_ok == 0:
            return np.zeros(0, np.int64), pos
        starts = starts[:n_ok]
        new_pos = int(nxt[n_ok - 1])
        self.avg_record_bytes = max(32.0, (new_pos - pos) / n_ok)
        return starts, new_pos

    def _u32_at(self, buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return gather_rows(buf, idx, 4)[0].view(self._u4)[:, 0].astype(np.int64)

    def chunk(self, buf: np.ndarray, starts: np.ndarray, first_index: int) -> RecordChunk:
        """A RecordChunk for pcap records starting at ``starts`` in ``buf``."""
        n = starts.shape[0]
        if n:
            header = gather_rows(buf, starts, 16)[0].view(self._u4)
            sec, frac, caplen = (header[:, k].astype(np.int64) for k in range(3))
        else:
            sec = frac = caplen = np.zeros(0, np.int64)
        ts_ns = sec * 1_000_000_000 + (frac if self.header.nanosecond else frac * 1000)
        return RecordChunk(
            buf=buf,
            offset=starts + 16,
            caplen=caplen,
            ts_ns=ts_ns,
            linktype=np.full(n, self.header.linktype, np.int32),
            frame_index=np.arange(first_index, first_index + n, dtype=np.int64),
        )


def _warn_stop(path: Path, status: str, index: int, skipped: Counter[str]) -> None:
    if status == _TRUNCATED:
        skipped["truncated_record"] += 1
        log.warning("%s: record %d is truncated at the end of the file; kept the %d records before it",
                    path, index, index)
    elif status == _CORRUPT:
        skipped["corrupt_record"] += 1
        log.warning("%s: record %d has an impossible captured length; stopped reading, kept %d records",
                    path, index, index)


def _iter_pcap(path: Path, source: _Source, head: bytes, chunk_records: int) -> Iterator[RecordChunk]:
    header = _parse_pcap_header(path, head)
    walker = _PcapWalker(header)
    index = 0
    if source.mapped is not None:
        buf = source.mapped
        pos = 24
        while True:
            starts, pos, status = walker.walk(buf, pos, True, chunk_records)
            chunk = walker.chunk(buf, starts, index)
            index += len(chunk)
            if status in (_TRUNCATED, _CORRUPT):
                _warn_stop(path, status, index, chunk.skipped)
            if len(chunk) or chunk.skipped:
                yield chunk
            if status != _OK:
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
            if (pending_count == chunk_records or pending_bytes >= MAX_CHUNK_BYTES or status in (_TRUNCATED, _CORRUPT)
                    or (final and pending)):
                chunk = _merge_pcap_pieces(walker, pending, index)
                index += len(chunk)
                pending, pending_count, pending_bytes = [], 0, 0
                if status in (_TRUNCATED, _CORRUPT):
                    _warn_stop(path, status, index, chunk.skipped)
                    yield chunk
                    return
                yield chunk
                del chunk  # do not hold a handed-on chunk while the next one fills
                if status == _OK:
                    continue
            break
        leftover = window[pos:].tobytes()


def _stack_windows(pieces: list[tuple[np.ndarray, Any]]) -> tuple[np.ndarray, dict[int, int]]:
    """One buffer holding each distinct window of ``pieces`` once, and each window's offset in it."""
    windows: list[np.ndarray] = []
    base: dict[int, int] = {}
    total = 0
    for window, _ in pieces:
        if id(window) not in base:
            base[id(window)] = total
            windows.append(window)
            total += window.shape[0]
    if not windows:
        return np.zeros(0, np.uint8), base
    return (windows[0] if len(windows) == 1 else np.concatenate(windows)), base


def _merge_pcap_pieces(walker: _PcapWalker, pieces: list[tuple[np.ndarray, np.ndarray]], index: int) -> RecordChunk:
    if not pieces:
        return walker.chunk(np.zeros(0, np.uint8), np.zeros(0, np.int64), index)
    buf, base = _stack_windows(pieces)
    starts = np.concatenate([s + base[id(w)] for w, s in pieces])
    return walker.chunk(buf, starts, index)


# --- pcapng --------------------------------------------------------------------------------


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6  # if_tsresol byte: 10**-v, or 2**-(v & 0x7f) when the high bit is set
    tsoffset_s: int = 0

    def ts_ns(self, ticks: int) -> int:
        v = self.tsresol
        if v & 0x80:
            ns = (ticks * 1_000_000_000) >> (v & 0x7F)
        elif v <= 9:
            ns = ticks * 10 ** (9 - v)
        else:
            ns = ticks // 10 ** (v - 9)
        return ns + self.tsoffset_s * 1_000_000_000


    def ts_ns_array(self, ts_hi: np.ndarray, ts_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ts_ns` for arrays of timestamp halves: (ns as int64, which rows fit in int64).

        The usual resolutions are computed in int64 where that is exact; others row by row.
        """
        v = self.tsresol
        offset_ns = self.tsoffset_s * 1_000_000_000
        if not v & 0x80 and v <= 9 and abs(offset_ns) < 1 << 62:
            mult = 10 ** (9 - v)
            limit = ((1 << 62) // mult) >> 32  # ts_hi below this: ticks * mult + offset fits
            fast = ts_hi < limit
            if fast.all():
                return ((ts_hi << 32) | ts_lo) * mult + offset_ns, np.ones(ts_hi.shape[0], bool)
        values = [self.ts_ns((int(h) << 32) | int(lo)) for h, lo in zip(ts_hi.tolist(), ts_lo.tolist())]
        in_range = np.array([-(1 << 63) <= x < (1 << 63) for x in values], bool)
        return np.array([x if ok else 0 for x, ok in zip(values, in_range)], np.int64), in_range


class _Columns:
    """Record columns gathered in pieces (arrays or lists), concatenated at the end."""

    def __init__(self) -> None:
        self.pieces: list[tuple] = []

    def add(self, *columns) -> None:
        self.pieces.append(columns)

    def arrays(self) -> list[np.ndarray]:
        if not self.pieces:
            return [np.zeros(0, np.int64) for _ in range(5)]
        return [np.concatenate([np.asarray(p[k], np.int64) for p in self.pieces]) for k in range(5)]


def _parse_idb(body: bytes, e: str) -> _Interface:
    if len(body) < 8:
        raise ValueError("interface description block too short")
    linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", body, 0)
    iface = _Interface(linktype, snaplen)
    for code, value in _options(body, 8, e):
        if code == 9 and len(value) >= 1:
            iface.tsresol = value[0]
        elif code == 14 and len(value) >= 8:
            (iface.tsoffset_s,) = struct.unpack_from(e + "q", value, 0)
    return iface


def _options(body: bytes, pos: int, e: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) of pcapng options starting at ``pos``; stops quietly at malformed ones."""
    n = len(body)
    while pos + 4 <= n:
        code, length = struct.unpack_from(e + "HH", body, pos)
        if code == 0:
            return
        value = body[pos + 4 : pos + 4 + length]
        if len(value) < length:
            return
        yield code, value
        pos += 4 + ((length + 3) & ~3)


class _PcapngWalker:
    """Walks pcapng blocks; keeps interfaces and byte order across calls (per section)."""

    def __init__(self, path: Path):
        self.path = path
        self.e = "<"
        self.interfaces: list[_Interface] = []
        self.last_ts_ns = 0
        self.section_seen = False

    def _section(self, buf, pos: int, block_len: int) -> None:
        bom_le = struct.unpack_from("<I", buf, pos + 8)[0]
        if bom_le == PCAPNG_BOM:
            self.e = "<"
        elif struct.unpack_from(">I", buf, pos + 8)[0] == PCAPNG_BOM:
            self.e = ">"
        else:
            raise CaptureFormatError(f"{self.path}: pcapng section header has a bad byte-order magic")
        self.interfaces = []
        self.section_seen = True

    def walk(self, buf, pos: int, final: bool, max_records: int, index: int):
        """Records from ``pos``: (offsets, caplens, ts_ns, linktypes, frame indices, pos, status,
        skipped, next frame index), the first five as int64 arrays.

        Enhanced packet blocks (nearly all blocks of a capture) are only located in the loop and
        decoded together by :meth:`_flush`; other blocks are handled one by one, after the
        pending EPBs (an interface or section block changes how later packets read).
        """
        end = len(buf)
        out = _Columns()
        skipped: Counter[str] = Counter()
        epb_pos: list[int] = []
        epb_len: list[int] = []
        unpack_from = struct.unpack_from
        fmt = self.e + "II"
        count = 0
        status = _OK
        while count < max_records:
            if pos + 12 > end:
                status = _END if pos == end else (_TRUNCATED if final else _NEED_MORE)
                break
            btype, blen = unpack_from(fmt, buf, pos)
            if btype == BLOCK_EPB and blen >= 32 and not blen & 3 and pos + blen <= end:
                epb_pos.append(pos)
                epb_len.append(blen)
                count += 1
                pos += blen
                continue
            index, bad_at = self._flush(buf, epb_pos, epb_len, index, out, skipped)
            epb_pos, epb_len = [], []
            if bad_at is not None:
                pos, status = bad_at, _CORRUPT
                break
            # The section header's own byte order decides how to read its length.
            if unpack_from("<I", buf, pos)[0] == PCAPNG_SHB:
                e = "<" if unpack_from("<I", buf, pos + 8)[0] == PCAPNG_BOM else ">"
                btype, blen = unpack_from(e + "II", buf, pos)
            else:
                e = self.e
            if blen < 12 or blen % 4 or blen > MAX_BLOCK_BYTES:
                status = _CORRUPT
                break
            if pos + blen > end:
                status = _TRUNCATED if final else _NEED_MORE
                break
            if unpack_from(e + "I", buf, pos + blen - 4)[0] != blen:
                status = _CORRUPT
                break
            body_at, body_end = pos + 8, pos + blen - 4
            if btype == PCAPNG_SHB:
                if blen < 28:
                    status = _CORRUPT
                    break
                self._section(buf, pos, blen)
                fmt = self.e + "II"
            elif btype == BLOCK_IDB:
                try:
                    self.interfaces.append(_parse_idb(bytes(buf[body_at:body_end]), self.e))
                except ValueError:
                    status = _CORRUPT
                    break
            elif btype in (BLOCK_EPB, BLOCK_PB, BLOCK_SPB):
                record = self._packet(buf, btype, body_at, body_end)
                if isinstance(record, str):
                    skipped[record] += 1
                    if record == "corrupt_record":
                        log.warning("%s: skipped corrupt packet block %d", self.path, index)
                else:
                    out.add([record[0]], [record[1]], [record[2]], [record[3]], [index])
                index += 1
                count += 1
            # Other block types (name resolution, statistics, decryption secrets...) are skipped.
            pos += blen
        index, bad_at = self._flush(buf, epb_pos, epb_len, index, out, skipped)
        if bad_at is not None:
            pos, status = bad_at, _CORRUPT
        return (*out.arrays(), pos, status, skipped, index)

    def _flush(self, buf, epb_pos: list[int], epb_len: list[int], index: int, out: _Columns,
               skipped: Counter[str]) -> tuple[int, int | None]:
        """Decode pending EPBs at once, with the rules of :meth:`_packet`.

        Returns the next frame index and, when an EPB's trailing length disagrees (a corrupt
        block length: reading must stop there), that block's position.
        """
        if not epb_pos:
            return index, None
        e = self.e
        u4 = np.dtype(e + "u4")
        starts = np.array(epb_pos, np.int64)
        lengths = np.array(epb_len, np.int64)
        trailer = gather_rows(buf, starts + lengths - 4, 4)[0].view(u4)[:, 0]
        bad_at = None
        mismatch = trailer != lengths
        if mismatch.any():
            k = int(np.argmax(mismatch))
            bad_at = epb_pos[k]
            starts, lengths = starts[:k], lengths[:k]
        n = starts.shape[0]
        if n == 0:
            return index, bad_at
        header = gather_rows(buf, starts + 8, 20)[0].view(u4).astype(np.int64)
        iface, ts_hi, ts_lo, caplen = header[:, 0], header[:, 1], header[:, 2], header[:, 3]
        frame_index = np.arange(index, index + n, dtype=np.int64)
        n_iface = len(self.interfaces)
        known = iface < n_iface
        iface_c = np.where(known, iface, 0)
        snaplen = np.array([i.snaplen for i in self.interfaces] or [0], np.int64)[iface_c]
        linktype = np.array([i.linktype for i in self.interfaces] or [-1], np.int64)[iface_c]
        corrupt = ~known | (caplen > lengths - 32) | (caplen > ABSURD_CAPLEN)
        corrupt |= (snaplen > 0) & (caplen > np.maximum(snaplen, MAX_SNAPLEN))
        unsupported = ~corrupt & ~np.isin(linktype, tuple(SUPPORTED_LINKTYPES))
        if unsupported.any():
            if not any(i.linktype in SUPPORTED_LINKTYPES for i in self.interfaces):
                bad_type = int(linktype[np.argmax(unsupported)])
                raise CaptureFormatError(f"{self.path}: unsupported link type {bad_type}")
            skipped["unsupported_link_type"] += int(unsupported.sum())
        ts_ns = np.zeros(n, np.int64)
        ok = ~corrupt & ~unsupported
        for k, itf in enumerate(self.interfaces):
            rows = np.flatnonzero(ok & (iface == k))
            if rows.shape[0]:
                ts, in_range = itf.ts_ns_array(ts_hi[rows], ts_lo[rows])
                ts_ns[rows] = ts
                corrupt[rows[~in_range]] = True
        ok = ~corrupt & ~unsupported
        for k in np.flatnonzero(corrupt).tolist():
            skipped["corrupt_record"] += 1
            log.warning("%s: skipped corrupt packet block %d", self.path, index + k)
        rows = np.flatnonzero(ok)
        if rows.shape[0]:
            self.last_ts_ns = int(ts_ns[rows[-1]])
            out.add(starts[rows] + 28, caplen[rows], ts_ns[rows], linktype[rows], frame_index[rows])
        return index + n, bad_at

    def _packet(self, buf, btype: int, body_at: int, body_end: int):
        e = self.e
        body_len = body_end - body_at
        if btype == BLOCK_EPB:
            if body_len < 20:
                return "corrupt_record"
            iface_id, ts_hi, ts_lo, caplen, _origlen = struct.unpack_from(e + "IIIII", buf, body_at)
            data_at = body_at + 20
        elif btype == BLOCK_PB:
            if body_len < 20:
                return "corrupt_record"
            iface_id, _drops, ts_hi, ts_lo, caplen, _origlen = struct.unpack_from(e + "HHIIII", buf, body_at)
            data_at = body_at + 20
        else:  # SPB: interface 0, no timestamp, caplen from the block and snaplen
            if body_len < 4:
                return "corrupt_record"
            (origlen,) = struct.unpack_from(e + "I", buf, body_at)
            iface_id = 0
            data_at = body_at + 4
            if not self.interfaces:
                return "corrupt_record"
            snap = self.interfaces[0].snaplen
            caplen = min(origlen, body_end - data_at, snap if snap else origlen)
            ts_hi = ts_lo = None
        if iface_id >= len(self.interfaces):
            return "corrupt_record"
        iface = self.interfaces[iface_id]
        if caplen > body_end - data_at or caplen > ABSURD_CAPLEN or (iface.snaplen and caplen > max(iface.snaplen, MAX_SNAPLEN)):
            return "corrupt_record"
        if iface.linktype not in SUPPORTED_LINKTYPES:
            if not any(i.linktype in SUPPORTED_LINKTYPES for i in self.interfaces):
                raise CaptureFormatError(f"{self.path}: unsupported link type {iface.linktype}")
            return "unsupported_link_type"
        if ts_hi is None:
            ts_ns = self.last_ts_ns  # an SPB has no timestamp: it takes the previous packet's
        else:
            ts_ns = iface.ts_ns((ts_hi << 32) | ts_lo)
            if not -(1 << 63) <= ts_ns < (1 << 63):  # a resolution or offset no clock has
                return "corrupt_record"
        self.last_ts_ns = ts_ns
        return data_at, caplen, ts_ns, iface.linktype


def _pcapng_chunk(buf: np.ndarray, offs, caps, tss, lts, idxs, skipped) -> RecordChunk:
    return RecordChunk(
        buf=buf,
        offset=np.array(offs, np.int64),
        caplen=np.array(caps, np.int64),
        ts_ns=np.array(tss, np.int64),
        linktype=np.array(lts, np.int32),
        frame_index=np.array(idxs, np.int64),
        skipped=skipped,
    )


def _check_shb(path: Path, head: bytes) -> None:
    if len(head) < 28:
        raise CaptureFormatError(f"{path}: truncated pcapng section header")
    for e in ("<", ">"):
        if struct.unpack_from(e + "I", head, 8)[0] == PCAPNG_BOM:
            blen = struct.unpack_from(e + "I", head, 4)[0]
            if blen < 28 or blen % 4:
                raise CaptureFormatError(f"{path}: pcapng section header has a bad block length {blen}")
            return
    raise CaptureFormatError(f"{path}: pcapng section header has a bad byte-order magic")


def _iter_pcapng(path: Path, source: _Source, head: bytes, chunk_records: int) -> Iterator[RecordChunk]:
    _check_shb(path, head)
    walker = _PcapngWalker(path)
    index = 0
    if source.mapped is not None:
        buf = source.mapped
        pos = 0
        while True:
            offs, caps, tss, lts, idxs, pos, status, skipped, index = walker.walk(buf, pos, True, chunk_records, index)
            chunk = _pcapng_chunk(buf, offs, caps, tss, lts, idxs, skipped)
            if status in (_TRUNCATED, _CORRUPT):
                _warn_stop(path, status, index, chunk.skipped)
            if len(chunk) or chunk.skipped:
                yield chunk
            if status != _OK:
                return
    window_bytes = head
    final = False
    acc: list = [[], [], [], [], [], Counter()]
    have = held_bytes = 0
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    while True:
        if not final:
            block, _clean = source.read(GZIP_BLOCK_BYTES)
            final = not block
            window_bytes += block
        window = np.frombuffer(window_bytes, np.uint8)
        pos = 0
        while True:
            want = chunk_records - have
            offs, caps, tss, lts, idxs, pos, status, skipped, index = walker.walk(window, pos, final, want, index)
            if len(offs):
                if not pieces or pieces[-1][0] is not window:
                    held_bytes += window.shape[0]
                pieces.append((window, offs))
            for column, values in zip(acc[:5], (offs, caps, tss, lts, idxs)):
                column.append(values)
            acc[5].update(skipped)
            have += len(offs)
            full = have == chunk_records or held_bytes >= MAX_CHUNK_BYTES
            stop = status in (_TRUNCATED, _CORRUPT) or (final and status != _OK)
            if full or stop:
                chunk = _merge_pcapng_pieces(pieces, acc)
                if status in (_TRUNCATED, _CORRUPT):
                    _warn_stop(path, status, index, chunk.skipped)
                if len(chunk) or chunk.skipped:
                    yield chunk
                del chunk  # do not hold a handed-on chunk while the next one fills
                acc = [[], [], [], [], [], Counter()]
                pieces = []
                have = held_bytes = 0
                if stop:
                    return
                if status == _OK:
                    continue
            break
        # Pending records keep their window alive in ``pieces``; the rest starts a new window.
        window_bytes = window_bytes[pos:]


def _merge_pcapng_pieces(pieces: list[tuple[np.ndarray, list[int]]], acc: list) -> RecordChunk:
    offs, caps, tss, lts, idxs, skipped = acc
    buf, base = _stack_windows(pieces)
    rebased = [os_ + base[id(w)] for w, os_ in pieces]
    return _pcapng_chunk(buf, *(np.concatenate(c) if c else np.zeros(0, np.int64)
                                for c in (rebased, caps, tss, lts, idxs)), skipped)


# --- public entry points ---------------------------------------------------------------------


def iter_records(path: str | os.PathLike[str], chunk_records: int = 65536) -> Iterator[RecordChunk]:
    """Chunks of at most ``chunk_records`` records of the capture at ``path``, in file order.

    Raises :class:`CaptureFormatError` when the file is not a readable capture, or when it breaks
    off (truncated or corrupt, gzip included) before its first complete record; truncated or
    corrupt records later in the file end the walk with a warning and a count in ``skipped``,
    every complete record before them kept.
    """
    p = _check_path(path)
    source = _Source(p)
    try:
        if source.mapped is not None:
            head = source.mapped[:HEAD_BYTES].tobytes()
        else:
            head, _clean = source.read(HEAD_BYTES)
            if not head:
                raise CaptureFormatError(f"{p}: empty or corrupt gzip stream, not a capture")
        fmt = _detect(p, head)
        walk = _iter_pcap if fmt == "pcap" else _iter_pcapng
        records, broken = 0, False
        for chunk in walk(p, source, head, chunk_records):
            records += len(chunk)
            broken = broken or bool(chunk.skipped.get("truncated_record") or chunk.skipped.get("corrupt_record"))
            yield chunk
        if records == 0 and (broken or not source.clean):
            raise CaptureFormatError(f"{p}: no complete record before the capture breaks off (truncated or corrupt)")
    finally:
        source.close()


def capture_info(path: str | os.PathLike[str]) -> dict:
    """Format, compression, link types, snaplen and timestamp resolution of a capture.

    Keys: ``path``, ``format`` (pcap/pcapng), ``compressed`` (gzip or None), ``byte_order``,
    ``link_types`` (list); pcap adds ``version``, ``snaplen`` (int) and ``ts_resolution_ns``;
    pcapng adds per-interface lists ``snaplen`` and ``ts_resolution`` ("1e-6 s", "2^-20 s"...),
    for the interfaces described before the first packet block. Reads at most 1 MiB.
    """
    p = _check_path(path)
    source = _Source(p)
    try:
        if source.mapped is not None:
            head = source.mapped[: 1 << 20].tobytes()
        else:
            head, _clean = source.read(1 << 20)
        fmt = _detect(p, head)
        info: dict = {"path": str(p), "format": fmt, "compressed": "gzip" if source.compressed else None}
        if fmt == "pcap":
            h = _parse_pcap_header(p, head)
            info.update(
                byte_order="big" if h.big_endian else "little",
                version=f"{h.version[0]}.{h.version[1]}",
                link_types=[h.linktype],
                snaplen=h.snaplen,
                ts_resolution_ns=1 if h.nanosecond else 1000,
            )
            return info
        _check_shb(p, head)
        walker = _PcapngWalker(p)
        buf = np.frombuffer(head, np.uint8)
        walker.walk(buf, 0, True, 1, 0)
        info.update(
            byte_order="big" if walker.e == ">" else "little",
            link_types=[i.linktype for i in walker.interfaces],
            snaplen=[i.snaplen for i in walker.interfaces],
            ts_resolution=[
                f"2^-{i.tsresol & 0x7F} s" if i.tsresol & 0x80 else f"1e-{i.tsresol} s" for i in walker.interfaces
            ],
        )
        return info
    finally:
        source.close()
