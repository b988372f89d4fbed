"""The flows being assembled: per-slot state and the hash table of open flows.

A flow occupies a slot from its first packet until it is emitted. :class:`Slots` holds, per
slot, one row of int64 fields (``state[slot, F_*]``: counters, timestamps, TCP closure and
reassembly state, list and run heads; one row is a few cache lines, which is what a packet
touches), its key words, and the page tables of its streams and hole masks. The open flows are
found by key in an open-addressing hash table of slot numbers (linear probing, kept at most half
full, entries deleted by backward shift). All are numpy arrays that the compiled assembler
updates in place; Python grows them (doubling) between batches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapvision.ingest.jit import compiled

__all__ = ["INT64_MAX", "EMPTY", "NONE", "Slots", "new_slots", "grow_slots", "new_table", "rehash", "remove_open"]

INT64_MAX = np.iinfo(np.int64).max
EMPTY = -1  # a free hash-table entry
NONE = -1  # "no page / no node" in page tables and linked pages

# Fields of a slot's state row; (2) marks a pair indexed by canonical direction (F_X + d).
F_FIRST_TS = 0  # ns
F_MAX_TS = 1  # ns, the largest timestamp
F_PREV_TS = 2  # ns, the previous packet's (capture order); INT64_MAX: free, or ended in this batch
F_FIRST_FRAME = 3  # frame index of the first packet
F_PKTS = 4  # (2)
F_BYTES = 6  # (2) IP bytes
F_PAYLOAD_BYTES = 8  # (2)
F_CODE = 10  # END_OPEN, or END_FIN / END_RST once closed
F_FIN = 11  # (2) FIN seen
F_SYN_DIR = 13  # direction of the first SYN without ACK (-1: none)
F_FIRST_DIR = 14  # direction of the first packet
F_LISTED = 15  # packets in the packet lists
F_LIST_HEAD = 16  # list pages (NONE: none)
F_LIST_TAIL = 17
F_DONE = 18  # (2) the direction holds max_bytes contiguous bytes
F_BASE = 20  # (2) TCP initial sequence number (-1: unknown)
F_END = 22  # (2) contiguous bytes collected
F_HOLE = 24  # (2) TCP direction in hole mode (has a mask)
F_PAYLEN = 26  # length of the interleaved payload
F_RUN_HEAD = 27  # run pages
F_RUN_TAIL = 28
F_RUN_COUNT = 29
F_GAP_HEAD = 30  # (2) gap nodes
F_SEEN_HI = 32  # (2) highest sequence offset seen
F_HASH = 34  # key hash
N_FIELDS = 35
# Page tables of a slot: streams of directions 0 and 1, then their hole masks.
T_STREAM, T_MASK = 0, 2


class Slots(NamedTuple):
    state: np.ndarray  # (C, N_FIELDS) int64
    words: np.ndarray  # (C, 5) uint64 key
    tables: np.ndarray  # (C, 4, K) int32 page tables (T_STREAM + d, T_MASK + d); K pages hold max_bytes
    free: np.ndarray  # (C,) int64 stack of free slots
    free_count: np.ndarray  # (1,) int64


def _initial_state(rows: int) -> np.ndarray:
    state = np.zeros((rows, N_FIELDS), np.int64)
    state[:, F_PREV_TS] = INT64_MAX  # never expires
    for field in (F_LIST_HEAD, F_LIST_TAIL, F_RUN_HEAD, F_RUN_TAIL, F_GAP_HEAD, F_GAP_HEAD + 1):
        state[:, field] = NONE
    return state


def new_slots(capacity: int, table_pages: int) -> Slots:
    """Free slots whose page tables have ``table_pages`` entries."""
    return _grown(None, capacity, table_pages)


def grow_slots(slots: Slots, capacity: int) -> Slots:
    """``slots`` with room for ``capacity`` slots (the new ones free)."""
    return _grown(slots, capacity, slots.tables.shape[2])


def _grown(slots: Slots | None, capacity: int, table_pages: int) -> Slots:
    old = 0 if slots is None else slots.state.shape[0]
    state = _initial_state(capacity)
    words = np.zeros((capacity, 5), np.uint64)
    tables = np.full((capacity, 4, table_pages), NONE, np.int32)
    free_count = 0
    kept = np.zeros(0, np.int64)
    if slots is not None:
        state[:old], words[:old], tables[:old] = slots.state, slots.words, slots.tables
        free_count = int(slots.free_count[0])
        kept = slots.free[:free_count]
    added = np.arange(capacity - 1, old - 1, -1, dtype=np.int64)  # popped from the end: lowest first
    free = np.concatenate([added, kept, np.zeros(old - free_count, np.int64)])
    return Slots(state, words, tables, free, np.array([free_count + capacity - old], np.int64))


def new_table(capacity: int) -> np.ndarray:
    """An empty hash table with at least ``capacity`` entries (a power of two)."""
    return np.full(1 << max(4, (capacity - 1).bit_length()), EMPTY, np.int64)


@compiled
def rehash(table, new, state):  # pragma: no cover - compiled
    """Insert every slot of ``table`` into the empty table ``new``."""
    mask = new.shape[0] - 1
    for i in range(table.shape[0]):
        s = table[i]
        if s != EMPTY:
            j = state[s, F_HASH] & mask
            while new[j] != EMPTY:
                j = (j + 1) & mask
            new[j] = s


@compiled
def remove_open(table, slots, state):  # pragma: no cover - compiled
    """Delete ``slots`` (open flows) from the table: backward-shift deletion keeps every other
    entry reachable from its home position without tombstones."""
    mask = table.shape[0] - 1
    for s in slots:
        i = state[s, F_HASH] & mask
        while table[i] != s:
            if table[i] == EMPTY:
                raise AssertionError("remove_open: the slot of an open flow is missing from the table")
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            c = table[j]
            if c == EMPTY:
                break
            home = state[c, F_HASH] & mask
            # c may stay unless its home lies cyclically outside (i, j]
            if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            table[i] = c
            i = j
        table[i] = EMPTY
