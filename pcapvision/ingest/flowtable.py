"""Slot storage of the flows being assembled: per-flow numpy arrays indexed by slot.

:class:`FlowTable` (the base of :class:`~pcapvision.ingest.assembler.FlowAssembler`) holds one row
per slot of counters, timestamps, TCP closure and reassembly state, the open flows' exact keys
(``_open``: key -> slot), the free slots, each flow's :class:`~pcapvision.ingest.flowbuffers.FlowBuffers`
and the TCP sequence space seen (:class:`~pcapvision.ingest.seqgaps.SequenceGaps`). Slots are
allocated in bulk, grown by doubling, and reused once a flow is emitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcapvision.ingest.flowbuffers import FlowBuffers
from pcapvision.ingest.flowschema import END_OPEN
from pcapvision.ingest.seqgaps import SequenceGaps

__all__ = ["INT64_MAX", "FlowTable"]

INT64_MAX = np.iinfo(np.int64).max


class FlowTable:
    """Per-slot arrays of the flows (``_first_ts``, ``_pkts``, ``_end``...; see :meth:`_grow`)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._open: dict[bytes, int] = {}  # exact key -> slot of the open flow
        self._free: list[int] = []
        self._capacity = 0
        self._keys: list[bytes | None] = []
        self._bufs: list[FlowBuffers | None] = []
        self._gaps = SequenceGaps()
        self._grow(1024)

    def _grow(self, capacity: int) -> None:
        old = self._capacity

        def extend(name: str, shape_tail: tuple[int, ...], dtype: Any, fill: Any) -> None:
            arr = np.full((capacity, *shape_tail), fill, dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)

        extend("_first_ts", (), np.int64, 0)
        extend("_max_ts", (), np.int64, 0)
        extend("_prev_ts", (), np.int64, INT64_MAX)  # INT64_MAX marks a free slot (never expires)
        extend("_first_frame", (), np.int64, 0)
        extend("_pkts", (2,), np.int64, 0)
        extend("_bytes", (2,), np.int64, 0)
        extend("_pbytes", (2,), np.int64, 0)
        extend("_code", (), np.int8, 0)
        extend("_fin", (2,), np.bool_, False)
        extend("_syn_dir", (), np.int8, -1)
        extend("_first_dir", (), np.int8, 0)
        extend("_listed", (), np.int64, 0)
        extend("_done", (2,), np.bool_, False)  # direction holds max_bytes contiguous bytes
        extend("_base", (2,), np.int64, -1)  # TCP initial sequence number per direction (-1: unknown)
        extend("_end", (2,), np.int64, 0)  # contiguous bytes collected per direction
        extend("_hole", (2,), np.bool_, False)  # TCP direction in hole mode (see FlowBuffers)
        extend("_paylen", (), np.int64, 0)  # length of the interleaved payload
        extend("_words", (5,), np.uint64, 0)
        self._gaps.grow(capacity)
        self._keys.extend([None] * (capacity - old))
        self._bufs.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity

    def _alloc(self, count: int) -> np.ndarray:
        if count > len(self._free):
            self._grow(max(2 * self._capacity, self._capacity + count - len(self._free)))
        taken = self._free[-count:] if count else []
        del self._free[len(self._free) - count:]
        slots = np.array(taken[::-1], np.int64)
        self._pkts[slots] = 0
        self._bytes[slots] = 0
        self._pbytes[slots] = 0
        self._code[slots] = END_OPEN
        self._fin[slots] = False
        self._syn_dir[slots] = -1
        self._listed[slots] = 0
        self._done[slots] = self._max_bytes == 0
        self._base[slots] = -1
        self._end[slots] = 0
        self._hole[slots] = False
        self._paylen[slots] = 0
        self._gaps.reset(slots)
        return slots
