"""Per-flow buffers, kept in pages shared by all flows: payload streams, hole masks, the runs of
the interleaved payload, the packet lists and the TCP sequence gaps.

Everything a flow collects lives in fixed-size pages of a few pools (numpy arrays), so the
compiled assembler can fill them without Python objects and a flow holds memory in proportion
to what it collected:

* **streams and hole masks**: a direction's stream (up to ``max_bytes``) is addressed through a
  page table per (slot, direction); pages are taken when a byte lands in them. Pages hold 256
  bytes to 4 KiB (:func:`page_layout`: 16 pages hold ``max_bytes`` up to 64 KiB, more pages of
  4 KiB beyond), so a flow wastes less than a page per direction. A TCP direction that receives
  a segment beyond its contiguous prefix switches to hole mode: a second page table maps a mask
  of the bytes received.
* **runs**: the interleaved ``payload`` only ever takes a direction's next contiguous bytes, so a
  flow keeps runs (``length << 1 | direction``; consecutive pieces of one direction merged) in a
  linked list of pages, and the column is cut from the streams at emission.
* **packet lists** (the ``packet_*`` columns): linked pages of :data:`LIST_PAGE` packets.
* **gaps**: the TCP sequence ranges never seen below the highest one seen (see
  :mod:`~pcapvision.ingest.seqgaps`), a linked list of nodes per (slot, direction).

Heads, tails and counts live in the flow's state row (:mod:`~pcapvision.ingest.flowtable`).

Each pool has a stack of free entries; :func:`reserve` grows a pool (doubling) when the compiled
assembler reports it short, and emission returns a finished flow's entries.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapvision.ingest.flowtable import (
    F_LIST_HEAD,
    F_LIST_TAIL,
    F_LISTED,
    F_RUN_COUNT,
    F_RUN_HEAD,
    F_RUN_TAIL,
    NONE,
)
from pcapvision.ingest.jit import compiled_inline, copy_bytes

__all__ = ["LIST_PAGE", "RUN_PAGE", "Pools", "new_pools", "page_layout", "reserve"]

RUN_PAGE = 16  # runs per run page
LIST_PAGE = 16  # packets per list page

# Pool kinds: indices of the free-stack sizes in Pools.free_count.
PAGES, RUNS, LISTS, GAPS = 0, 1, 2, 3


class Pools(NamedTuple):
    """The page pools of one assembler (arrays only: handed to compiled code as they are)."""

    pages: np.ndarray  # (P, page_bytes) uint8: stream bytes and hole masks
    runs: np.ndarray  # (R, RUN_PAGE) int64
    run_next: np.ndarray  # (R,) int32
    list_time: np.ndarray  # (L, LIST_PAGE) float64: ms since the flow's first packet
    list_bytes: np.ndarray  # (L, LIST_PAGE, 2) uint8: canonical direction, TCP flags
    list_lengths: np.ndarray  # (L, LIST_PAGE, 2) int32: payload bytes, IP bytes
    list_next: np.ndarray  # (L,) int32
    gaps: np.ndarray  # (G, 2) int64: [lo, hi) never seen
    gap_next: np.ndarray  # (G,) int32
    free: np.ndarray  # (4, N) int32: free stack of each kind (N: the largest pool)
    free_count: np.ndarray  # (4,) int64: entries on each free stack


_FIELDS = {PAGES: ("pages",), RUNS: ("runs", "run_next"),
           LISTS: ("list_time", "list_bytes", "list_lengths", "list_next"), GAPS: ("gaps", "gap_next")}


def page_layout(max_bytes: int) -> tuple[int, int]:
    """(page bytes, pages per table) for streams of ``max_bytes``: the smallest power of two
    from 256 bytes that lets 16 pages hold them, at most 4 KiB (then more pages per table)."""
    size = 256
    while size * 16 < max_bytes and size < 4096:
        size *= 2
    return size, max(1, -(-max_bytes // size))


def new_pools(page: int, capacity: int = 256) -> Pools:
    """Empty pools with ``capacity`` free entries each."""
    pools = Pools(
        pages=np.empty((0, page), np.uint8), runs=np.empty((0, RUN_PAGE), np.int64), run_next=np.empty(0, np.int32),
        list_time=np.empty((0, LIST_PAGE), np.float64), list_bytes=np.empty((0, LIST_PAGE, 2), np.uint8),
        list_lengths=np.empty((0, LIST_PAGE, 2), np.int32), list_next=np.empty(0, np.int32),
        gaps=np.empty((0, 2), np.int64), gap_next=np.empty(0, np.int32),
        free=np.empty((4, 0), np.int32), free_count=np.zeros(4, np.int64),
    )
    for kind in (PAGES, RUNS, LISTS, GAPS):
        pools = reserve(pools, kind, capacity)
    return pools


def reserve(pools: Pools, kind: int, count: int) -> Pools:
    """``pools`` with at least ``count`` free entries of ``kind``.

    A pool grows fourfold: growing copies it, while the part not used yet costs address space
    only (its pages are not touched), so fewer, larger steps copy less (a third of the final size
    in all, against its whole size when doubling).
    """
    free = int(pools.free_count[kind])
    if free >= count:
        return pools
    size = getattr(pools, _FIELDS[kind][0]).shape[0]
    new_size = max(4 * size, size + count - free, 64)
    changes = {}
    for name in _FIELDS[kind]:
        old = getattr(pools, name)
        grown = np.empty((new_size, *old.shape[1:]), old.dtype)  # entries are written before read
        grown[:size] = old
        changes[name] = grown
    stacks = pools.free
    if stacks.shape[1] < new_size:
        stacks = np.empty((4, max(new_size, 4 * stacks.shape[1])), np.int32)
        stacks[:, : pools.free.shape[1]] = pools.free
    # A stack pops from its end: new entries go below the old free ones, so recently freed
    # (warm) entries are reused first, and new ones in increasing order.
    added = new_size - size
    stacks[kind, added : added + free] = stacks[kind, :free].copy()
    stacks[kind, :added] = np.arange(new_size - 1, size - 1, -1, dtype=np.int32)
    pools.free_count[kind] = free + added
    return pools._replace(free=stacks, **changes)


# --- compiled primitives (inlined into the assembler's and emission's loops) -------------------------


@compiled_inline
def take(free, free_count, kind):  # pragma: no cover - compiled
    free_count[kind] -= 1
    return free[kind, free_count[kind]]


@compiled_inline
def give(free, free_count, kind, entry):  # pragma: no cover - compiled
    free[kind, free_count[kind]] = entry
    free_count[kind] += 1


@compiled_inline
def write_bytes(pages, free, free_count, table, at, src, src_at, n):  # pragma: no cover - compiled
    """Copy ``src[src_at : src_at + n]`` to offset ``at`` of the paged buffer of ``table``."""
    page = pages.shape[1]
    while n > 0:
        k = at // page
        if table[k] == NONE:
            table[k] = take(free, free_count, PAGES)
        within = at - k * page
        step = min(n, page - within)
        copy_bytes(pages[table[k]], within, src, src_at, step)
        at += step
        src_at += step
        n -= step


@compiled_inline
def read_bytes(pages, table, at, n, out, out_at):  # pragma: no cover - compiled
    """Copy ``n`` bytes from offset ``at`` of the paged buffer of ``table`` to ``out[out_at:]``."""
    page = pages.shape[1]
    while n > 0:
        k = at // page
        within = at - k * page
        step = min(n, page - within)
        copy_bytes(out, out_at, pages[table[k]], within, step)
        at += step
        out_at += step
        n -= step


@compiled_inline
def mark(pages, free, free_count, table, lo, hi):  # pragma: no cover - compiled
    """Set the mask bytes [lo, hi) of the hole mask of ``table`` (its pages start zeroed)."""
    page = pages.shape[1]
    while lo < hi:
        k = lo // page
        if table[k] == NONE:
            table[k] = take(free, free_count, PAGES)
            pages[table[k]] = 0
        within = lo - k * page
        step = min(hi - lo, page - within)
        pages[table[k], within : within + step] = 1
        lo += step


@compiled_inline
def find_mask(pages, table, value, lo, hi):  # pragma: no cover - compiled
    """First offset in [lo, hi) whose mask byte equals ``value`` (0 or 1), else -1."""
    page = pages.shape[1]
    i = lo
    while i < hi:
        k = i // page
        end = min(hi, (k + 1) * page)
        if table[k] == NONE:
            if value == 0:
                return i
            i = end
            continue
        p = table[k]
        for j in range(i - k * page, end - k * page):
            if pages[p, j] == value:
                return k * page + j
        i = end
    return -1


@compiled_inline
def release_table(free, free_count, table):  # pragma: no cover - compiled
    for k in range(table.shape[0]):
        if table[k] != NONE:
            give(free, free_count, PAGES, table[k])
            table[k] = NONE


@compiled_inline
def _tail_page(next_page, free, free_count, kind, per_page, state, s, head, tail, count):  # pragma: no cover
    """The page for entry ``count`` of flow ``s``'s chain of pages (``state[s, head]`` ...
    ``state[s, tail]``): the tail, or a new page appended when ``count`` starts one."""
    if count % per_page == 0:
        page = take(free, free_count, kind)
        next_page[page] = NONE
        if count == 0:
            state[s, head] = page
        else:
            next_page[state[s, tail]] = page
        state[s, tail] = page
    return state[s, tail]


@compiled_inline
def _release_chain(next_page, free, free_count, kind, page):  # pragma: no cover - compiled
    while page != NONE:
        nxt = next_page[page]
        give(free, free_count, kind, page)
        page = nxt


@compiled_inline
def add_run(runs, run_next, free, free_count, state, s, d, length):  # pragma: no cover - compiled
    """The next ``length`` bytes of direction ``d`` join flow ``s``'s interleaved payload."""
    if length <= 0:
        return
    count = state[s, F_RUN_COUNT]
    if count:
        tail = state[s, F_RUN_TAIL]
        last = (count - 1) % RUN_PAGE
        if runs[tail, last] & 1 == d:  # the same direction again: the last run grows
            runs[tail, last] += length << 1
            return
    page = _tail_page(run_next, free, free_count, RUNS, RUN_PAGE, state, s, F_RUN_HEAD, F_RUN_TAIL, count)
    runs[page, count % RUN_PAGE] = (length << 1) | d
    state[s, F_RUN_COUNT] = count + 1


@compiled_inline
def release_runs(run_next, free, free_count, state, s):  # pragma: no cover - compiled
    _release_chain(run_next, free, free_count, RUNS, state[s, F_RUN_HEAD])
    state[s, F_RUN_HEAD] = NONE
    state[s, F_RUN_TAIL] = NONE
    state[s, F_RUN_COUNT] = 0


@compiled_inline
def add_listed(list_time, list_bytes, list_lengths, list_next, free, free_count, state, s, time_ms, d, plen,
               ipb, flags):  # pragma: no cover - compiled
    """Append one packet to flow ``s``'s packet lists."""
    count = state[s, F_LISTED]
    page = _tail_page(list_next, free, free_count, LISTS, LIST_PAGE, state, s, F_LIST_HEAD, F_LIST_TAIL, count)
    k = count % LIST_PAGE
    list_time[page, k] = time_ms
    list_bytes[page, k, 0] = d
    list_bytes[page, k, 1] = flags
    list_lengths[page, k, 0] = plen
    list_lengths[page, k, 1] = ipb
    state[s, F_LISTED] = count + 1


@compiled_inline
def release_list(list_next, free, free_count, state, s):  # pragma: no cover - compiled
    _release_chain(list_next, free, free_count, LISTS, state[s, F_LIST_HEAD])
    state[s, F_LIST_HEAD] = NONE
    state[s, F_LIST_TAIL] = NONE
