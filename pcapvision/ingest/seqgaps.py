"""TCP sequence-space gaps per flow direction: what the capture missed (Zeek's ``missed_bytes``).

For every TCP direction the assembler knows the initial sequence number (``base``: SYN seq + 1,
else the seq of the first segment carrying data). Over the whole flow, not only the
``max_bytes`` kept as payload, it follows the highest sequence offset seen (``seen_hi``) and the
ranges below it that no segment ever covered: a segment starting beyond ``seen_hi`` opens a gap,
a later one (reordering, retransmission) may fill gaps. Missed bytes = the total length of the
gaps when the flow ends.

Offsets are taken modulo 2**32 as signed values relative to the base, as in payload reassembly
(:mod:`pcapvision.ingest.reassembly`): sequence space is tracked over the first 2 GiB of each
direction (a segment beyond looks like one before the base and is ignored). Gaps are nodes of
the gap pool (:mod:`pcapvision.ingest.flowbuffers`).
"""

from __future__ import annotations

from pcapvision.ingest.flowbuffers import GAPS, give, take
from pcapvision.ingest.flowtable import F_GAP_HEAD, F_SEEN_HI, NONE
from pcapvision.ingest.jit import compiled_inline

__all__ = ["note_segment", "missed_bytes", "release_gaps"]


@compiled_inline
def note_segment(gaps, gap_next, free, free_count, state, s, d, lo, hi):  # pragma: no cover - compiled
    """Segment [lo, hi) (offsets from the base, hi > lo >= 0) seen in direction ``d`` of flow ``s``."""
    top = state[s, F_SEEN_HI + d]
    head = F_GAP_HEAD + d
    if lo > top:
        node = take(free, free_count, GAPS)
        gaps[node, 0] = top
        gaps[node, 1] = lo
        gap_next[node] = state[s, head]
        state[s, head] = node
    elif lo < top and state[s, head] != NONE:
        prev = NONE
        node = state[s, head]
        while node != NONE:
            nxt = gap_next[node]
            start, end = gaps[node, 0], gaps[node, 1]
            if hi <= start or lo >= end:  # untouched
                prev = node
            elif start < lo and hi < end:  # filled in the middle: split in two
                extra = take(free, free_count, GAPS)
                gaps[extra, 0] = hi
                gaps[extra, 1] = end
                gap_next[extra] = nxt
                gaps[node, 1] = lo
                gap_next[node] = extra
                prev = extra
            elif start < lo:
                gaps[node, 1] = lo
                prev = node
            elif hi < end:
                gaps[node, 0] = hi
                prev = node
            else:  # filled entirely
                if prev == NONE:
                    state[s, head] = nxt
                else:
                    gap_next[prev] = nxt
                give(free, free_count, GAPS, node)
            node = nxt
    if hi > top:
        state[s, F_SEEN_HI + d] = hi


@compiled_inline
def missed_bytes(gaps, gap_next, state, s, d):  # pragma: no cover - compiled
    total = 0
    node = state[s, F_GAP_HEAD + d]
    while node != NONE:
        total += gaps[node, 1] - gaps[node, 0]
        node = gap_next[node]
    return total


@compiled_inline
def release_gaps(gap_next, free, free_count, state, s, d):  # pragma: no cover - compiled
    node = state[s, F_GAP_HEAD + d]
    while node != NONE:
        nxt = gap_next[node]
        give(free, free_count, GAPS, node)
        node = nxt
    state[s, F_GAP_HEAD + d] = NONE
