"""pcapng files: blocks walked (section headers, interfaces, packet blocks) into :class:`RecordChunk` s.

pcapng blocks are located by a loop and their enhanced packet blocks decoded together; a gzip
capture is walked in windows of decompressed bytes, as pcap is.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest.constants import SUPPORTED_LINKTYPES
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
    gather_rows,
    stack_windows,
    warn_stop,
)
from pcapvision.ingest.source import GZIP_BLOCK_BYTES, Source

log = logging.getLogger(__name__)

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

# pcapng block types
BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 1, 2, 3, 6

# A pcapng block longer than this is corrupt (no packet can be: see ABSURD_CAPLEN); refusing
# it at once keeps a lying length from making the reader buffer gigabytes waiting for its end.
MAX_BLOCK_BYTES = (1 << 24) + 4096


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


class PcapngWalker:
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
        status = OK
        while count < max_records:
            if pos + 12 > end:
                status = END if pos == end else (TRUNCATED if final else NEED_MORE)
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
                pos, status = bad_at, CORRUPT
                break
            # The section header's own byte order decides how to read its length.
            if unpack_from("<I", buf, pos)[0] == PCAPNG_SHB:
                e = "<" if unpack_from("<I", buf, pos + 8)[0] == PCAPNG_BOM else ">"
                btype, blen = unpack_from(e + "II", buf, pos)
            else:
                e = self.e
            if blen < 12 or blen % 4 or blen > MAX_BLOCK_BYTES:
                status = CORRUPT
                break
            if pos + blen > end:
                status = TRUNCATED if final else NEED_MORE
                break
            if unpack_from(e + "I", buf, pos + blen - 4)[0] != blen:
                status = CORRUPT
                break
            body_at, body_end = pos + 8, pos + blen - 4
            if btype == PCAPNG_SHB:
                if blen < 28:
                    status = CORRUPT
                    break
                self._section(buf, pos, blen)
                fmt = self.e + "II"
            elif btype == BLOCK_IDB:
                try:
                    self.interfaces.append(_parse_idb(bytes(buf[body_at:body_end]), self.e))
                except ValueError:
                    status = CORRUPT
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
            pos, status = bad_at, CORRUPT
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


def check_shb(path: Path, head: bytes) -> None:
    if len(head) < 28:
        raise CaptureFormatError(f"{path}: truncated pcapng section header")
    for e in ("<", ">"):
        if struct.unpack_from(e + "I", head, 8)[0] == PCAPNG_BOM:
            blen = struct.unpack_from(e + "I", head, 4)[0]
            if blen < 28 or blen % 4:
                raise CaptureFormatError(f"{path}: pcapng section header has a bad block length {blen}")
            return
    raise CaptureFormatError(f"{path}: pcapng section header has a bad byte-order magic")


def iter_pcapng(path: Path, source: Source, head: bytes, chunk_records: int) -> Iterator[RecordChunk]:
    check_shb(path, head)
    walker = PcapngWalker(path)
    index = 0
    if source.mapped is not None:
        buf = source.mapped
        pos = 0
        while True:
            offs, caps, tss, lts, idxs, pos, status, skipped, index = walker.walk(buf, pos, True, chunk_records, index)
            chunk = _pcapng_chunk(buf, offs, caps, tss, lts, idxs, skipped)
            if status in (TRUNCATED, CORRUPT):
                warn_stop(path, status, index, chunk.skipped)
            if len(chunk) or chunk.skipped:
                yield chunk
            if status != OK:
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
            stop = status in (TRUNCATED, CORRUPT) or (final and status != OK)
            if full or stop:
                chunk = _merge_pcapng_pieces(pieces, acc)
                if status in (TRUNCATED, CORRUPT):
                    warn_stop(path, status, index, chunk.skipped)
                if len(chunk) or chunk.skipped:
                    yield chunk
                del chunk  # do not hold a handed-on chunk while the next one fills
                acc = [[], [], [], [], [], Counter()]
                pieces = []
                have = held_bytes = 0
                if stop:
                    return
                if status == OK:
                    continue
            break
        # Pending records keep their window alive in ``pieces``; the rest starts a new window.
        window_bytes = window_bytes[pos:]


def _merge_pcapng_pieces(pieces: list[tuple[np.ndarray, list[int]]], acc: list) -> RecordChunk:
    offs, caps, tss, lts, idxs, skipped = acc
    buf, base = stack_windows(pieces)
    rebased = [os_ + base[id(w)] for w, os_ in pieces]
    return _pcapng_chunk(buf, *(np.concatenate(c) if c else np.zeros(0, np.int64)
                                for c in (rebased, caps, tss, lts, idxs)), skipped)
