"""Payload collection: each packet's bytes placed in its flow's direction stream (compiled).

TCP directions are reassembled from their initial sequence number modulo 2**32: first-seen bytes
win, so retransmitted and overlapping bytes never appear twice; out-of-order segments land in
place; bytes before the initial sequence number are dropped; only the first ``max_bytes`` of
sequence space are kept. While every segment starts within the contiguous prefix, new bytes are
appended; the first segment beyond it switches the direction to hole mode, where a mask records
the bytes received and the contiguous end advances over it. UDP datagrams are appended in arrival
order. Whenever a direction's contiguous prefix grows, the new bytes join the interleaved
``payload`` (as a run, capped at ``max_bytes``). Storage: :mod:`~pcapvision.ingest.flowbuffers`.
"""

from __future__ import annotations

from pcapvision.ingest.flowbuffers import add_run, find_mask, mark, write_bytes
from pcapvision.ingest.flowtable import F_DONE, F_END, F_HOLE, F_PAYLEN, T_MASK, T_STREAM
from pcapvision.ingest.jit import compiled_inline

__all__ = ["place_tcp", "place_udp", "RETRANSMITTED", "OVERLAPPING", "OUT_OF_ORDER"]

# Indices of the segment counters in the assembler's ``counters`` array.
RETRANSMITTED, OVERLAPPING, OUT_OF_ORDER = 0, 1, 2


@compiled_inline
def _to_payload(runs, run_next, free, free_count, state, s, d, length, max_bytes):  # pragma: no cover
    """The next ``length`` contiguous bytes of direction ``d`` join the interleaved payload."""
    taken = state[s, F_PAYLEN]
    if taken < max_bytes and length > 0:
        add_run(runs, run_next, free, free_count, state, s, d, min(length, max_bytes - taken))
        state[s, F_PAYLEN] = min(taken + length, max_bytes)


@compiled_inline
def place_udp(state, tables, pages, runs, run_next, free, free_count, s, d, data, at, length,
              max_bytes):  # pragma: no cover - compiled
    end = state[s, F_END + d]
    n = min(length, max_bytes - end)
    if n > 0:
        write_bytes(pages, free, free_count, tables[s, T_STREAM + d], end, data, at, n)
        state[s, F_END + d] = end + n
        _to_payload(runs, run_next, free, free_count, state, s, d, n, max_bytes)
    state[s, F_DONE + d] = state[s, F_END + d] >= max_bytes


@compiled_inline
def place_tcp(state, tables, pages, runs, run_next, free, free_count, s, d, data, at, rel, length, max_bytes,
              counters):  # pragma: no cover - compiled
    """Segment of ``length`` bytes (``data[at:]``) at offset ``rel`` from the initial sequence number."""
    end = state[s, F_END + d]
    lo = max(rel, 0)
    hi = min(rel + length, max_bytes)
    if lo >= hi:  # entirely before the initial seq, or beyond the kept window
        if rel + length <= end:
            counters[RETRANSMITTED] += 1
        return
    stream = tables[s, T_STREAM + d]
    mask = tables[s, T_MASK + d]
    if not state[s, F_HOLE + d]:
        if lo <= end:  # in order: append what is new
            if hi <= end:
                counters[RETRANSMITTED] += 1
                return
            if lo < end:
                counters[OVERLAPPING] += 1
            write_bytes(pages, free, free_count, stream, end, data, at + end - rel, hi - end)
            state[s, F_END + d] = hi
            _to_payload(runs, run_next, free, free_count, state, s, d, hi - end, max_bytes)
            state[s, F_DONE + d] = hi >= max_bytes
            return
        mark(pages, free, free_count, mask, 0, end)  # hole mode: the mask starts with the prefix
        state[s, F_HOLE + d] = 1
    if lo > end:
        counters[OUT_OF_ORDER] += 1
    if find_mask(pages, mask, 1, lo, hi) == -1:
        write_bytes(pages, free, free_count, stream, lo, data, at + lo - rel, hi - lo)
        mark(pages, free, free_count, mask, lo, hi)
    else:  # first-seen bytes win: write only the runs not received yet
        new_bytes = False
        i = lo
        while i < hi:
            z = find_mask(pages, mask, 0, i, hi)
            if z == -1:
                break
            o = find_mask(pages, mask, 1, z, hi)
            if o == -1:
                o = hi
            write_bytes(pages, free, free_count, stream, z, data, at + z - rel, o - z)
            mark(pages, free, free_count, mask, z, o)
            new_bytes = True
            i = o
        counters[OVERLAPPING if new_bytes else RETRANSMITTED] += 1
    if lo <= end:
        new_end = find_mask(pages, mask, 0, end, max_bytes)
        if new_end == -1:
            new_end = max_bytes
        state[s, F_END + d] = new_end
        _to_payload(runs, run_next, free, free_count, state, s, d, new_end - end, max_bytes)
    state[s, F_DONE + d] = state[s, F_END + d] >= max_bytes
