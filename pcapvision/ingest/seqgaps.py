"""TCP sequence-space gaps per flow direction: what the capture missed (Zeek's ``missed_bytes``).

For every TCP direction the assembler knows the initial sequence number (``base``: SYN seq + 1,
else the seq of the first segment carrying data). :class:`SequenceGaps` follows, over the whole
flow and not only the ``max_bytes`` kept as payload, the highest sequence offset seen (``hi``)
and the ranges below it that no segment ever covered. Missed bytes = the total length of those
ranges at the end of the flow: sequence space never seen below the highest seen.

The common case (segments in order, retransmitted or overlapping, never starting beyond what
was already seen) is vectorised and keeps no ranges; a direction whose segment starts beyond
``hi`` switches to a small Python list of open gaps, which later segments (reordering,
retransmissions) may fill.

Offsets are taken modulo 2**32 as signed values relative to the base, as in payload
reassembly (:mod:`pcapvision.ingest.reassembly`), which makes the result independent of how packets
are chunked: sequence space is tracked over the first 2 GiB of each direction (a segment beyond
looks like one before the base and is ignored).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SequenceGaps"]

_SHIFT = 42  # running maxima are kept apart per group by adding group << 42 (offsets < 4 TiB)


def _wrap_signed(x: np.ndarray) -> np.ndarray:
    x = x & 0xFFFFFFFF
    return np.where(x >= 0x80000000, x - 0x100000000, x)


class SequenceGaps:
    """Highest sequence offset and never-seen ranges of each (slot, direction)."""

    def __init__(self) -> None:
        self.hi = np.zeros((0, 2), np.int64)  # highest offset seen, relative to the base
        self.gapped = np.zeros((0, 2), np.bool_)  # direction has (or had) open gaps: see ``gaps``
        self.gaps: dict[tuple[int, int], list[list[int]]] = {}  # (slot, d) -> [[start, end), ...]

    def grow(self, capacity: int) -> None:
        old = self.hi.shape[0]
        for name, dtype in (("hi", np.int64), ("gapped", np.bool_)):
            arr = np.zeros((capacity, 2), dtype)
            arr[:old] = getattr(self, name)
            setattr(self, name, arr)

    def reset(self, slots: np.ndarray) -> None:
        self.hi[slots] = 0
        self.gapped[slots] = False

    def add(self, base: np.ndarray, e_slot: np.ndarray, e_dir: np.ndarray, e_dseq: np.ndarray,
            e_len: np.ndarray) -> None:
        """Account for TCP segments in capture order (``base`` is the assembler's per (slot,
        direction) initial sequence number array, -1 while unknown; set here as in payload
        collection: the first SYN or data segment's sequence number)."""
        m = len(e_slot)
        if not m:
            return
        key = e_slot * 2 + e_dir
        order = np.argsort(key, kind="stable")
        key, e_slot, e_dir = key[order], e_slot[order], e_dir[order]
        e_dseq, e_len = e_dseq[order], e_len[order]
        # The base is fixed by the first SYN or data segment of the direction (entries are only those).
        first = np.concatenate([[True], key[1:] != key[:-1]])
        gstarts = np.flatnonzero(first)
        grp = np.cumsum(first) - 1
        gslot, gdir = e_slot[gstarts], e_dir[gstarts]
        b0 = base[gslot, gdir]
        gbase = np.where(b0 >= 0, b0, e_dseq[gstarts])
        base[gslot, gdir] = gbase
        ref = self.hi[gslot, gdir]
        rel = _wrap_signed(e_dseq - gbase[grp])
        lo = np.maximum(rel, 0)
        hi = rel + e_len
        valid = hi > lo  # data at or after the base (bytes before it are not sequence space we track)
        hiv = np.maximum(np.where(valid, hi, 0), ref[grp])
        shift = grp.astype(np.int64) << _SHIFT
        running = np.maximum.accumulate(hiv + shift) - shift
        before = np.empty(m, np.int64)
        before[1:] = running[:-1]
        before[gstarts] = ref
        beyond = valid & (lo > before)
        slow = (np.bincount(grp, weights=beyond, minlength=len(gstarts)) > 0) | self.gapped[gslot, gdir]
        fast = ~slow
        self.hi[gslot[fast], gdir[fast]] = running[np.append(gstarts[1:], m) - 1][fast]
        for g in np.flatnonzero(slow).tolist():
            a = int(gstarts[g])
            z = int(gstarts[g + 1]) if g + 1 < len(gstarts) else m
            self._replay(int(gslot[g]), int(gdir[g]), lo[a:z].tolist(), hi[a:z].tolist(), valid[a:z].tolist())

    def _replay(self, slot: int, d: int, los: list[int], his: list[int], valid: list[bool]) -> None:
        """Segment by segment: a segment beyond ``hi`` opens a gap, one below it may fill gaps."""
        gaps = self.gaps.setdefault((slot, d), [])
        top = int(self.hi[slot, d])
        for lo, hi, ok in zip(los, his, valid):
            if not ok:
                continue
            if lo > top:
                gaps.append([top, lo])
            elif gaps and lo < top:
                kept = []
                for start, end in gaps:
                    if hi <= start or lo >= end:
                        kept.append([start, end])
                        continue
                    if start < lo:
                        kept.append([start, lo])
                    if hi < end:
                        kept.append([hi, end])
                gaps[:] = kept
            top = max(top, hi)
        self.hi[slot, d] = top
        self.gapped[slot, d] = True

    def missed(self, slots: np.ndarray) -> np.ndarray:
        """Missed bytes (n, 2) of the flows in ``slots``; forgets their gaps (the flows end)."""
        out = np.zeros((len(slots), 2), np.int64)
        for i in np.flatnonzero(self.gapped[slots].any(axis=1)).tolist():
            slot = int(slots[i])
            for d in (0, 1):
                gaps = self.gaps.pop((slot, d), None)
                if gaps:
                    out[i, d] = sum(end - start for start, end in gaps)
        return out
