"""Flow assembly: a stream of :class:`~pcapvision.ingest.packets.PacketBatch` -> finished flows.

Packets are grouped into bidirectional flows by their canonical 5-tuple, split by timeouts and TCP
closure, counted per direction, and their payload is kept (TCP reassembled by sequence number).
Each batch is assembled by one compiled loop over its packets in capture order (:mod:`.jit`):
no Python runs per packet, and per flow only when it is emitted (address text, Community ID,
TLS metadata). This module cuts flows (keys looked up, timeouts, closure, counters, packet lists)
and drives the others: :mod:`.flowkey` computes each packet's canonical key, :mod:`.flowtable`
holds the per-slot state of the flows and the table of open ones, :mod:`.flowbuffers` the pages
their bytes and lists live in, :mod:`.reassembly` places their payload, :mod:`.seqgaps` counts
the TCP bytes the capture missed, :mod:`.emission` builds the columns of :mod:`.flowschema`'s
table when flows end (as dicts with :meth:`FlowAssembler.add`, or Arrow record batches with
:meth:`FlowAssembler.add_columns` / :func:`assemble_flow_batches`).

The semantics (also in ``docs/ingest-flows.md``):

* **Key and directions.** Flows are keyed by (VLAN id of the outermost 802.1Q tag, IP version,
  protocol, the two (address, port) endpoints in canonical order), as NFStream does: the same
  5-tuple on two VLANs is two flows. The initiator (``src_*``) is the sender of the first SYN without
  ACK when one is seen, else the sender of the first packet.
* **Splits.** A packet starts a new flow on its tuple when it arrives more than ``idle_timeout_s``
  after the previous packet of the flow (``idle_timeout``), more than ``active_timeout_s`` after
  the flow's first packet (``active_timeout``), or when it is a SYN without ACK and the flow is
  closed. A TCP flow is closed by an RST, or once FINs were seen from both sides; other packets
  after closure (final ACKs, retransmitted FINs) stay in the closed flow. ``end_reason`` of a
  closed flow is ``rst`` or ``fin`` (whichever closed it), whatever ended it afterwards.
* **Expiry.** After each batch, every flow whose last packet lies more than ``idle_timeout_s``
  before the capture clock (the largest timestamp seen so far) ends (``idle_timeout``), so memory
  is bounded by the flows active within the idle timeout. :meth:`FlowAssembler.flush` ends the
  rest (``end_of_capture``).
* **Time.** Timestamps may go backwards: ``first_seen_ns`` is the first packet's timestamp,
  ``last_seen_ns`` the largest, ``packet_time_ms`` is relative to ``first_seen_ns`` as measured
  (may be negative), idle gaps are measured from the previous packet in capture order.
* **Payload.** Each TCP direction is reassembled from its initial sequence number (SYN seq + 1,
  else the seq of the first segment carrying data) modulo 2**32: first-seen bytes win, so
  retransmitted and overlapping bytes never appear twice; out-of-order segments land in place;
  bytes before the initial sequence number are dropped. A direction keeps its contiguous prefix
  only: bytes after a hole that is never filled are dropped. UDP datagrams are concatenated in
  arrival order. ``payload`` is the delivery order of both directions: whenever a packet extends
  a direction's contiguous prefix, the newly contiguous bytes are appended. All three are capped
  at ``max_bytes``.
* **Order.** :meth:`FlowAssembler.add` returns the flows that ended during the batch and
  :meth:`FlowAssembler.flush` the rest, each sorted by (``first_seen_ns``, frame index of the
  first packet, tuple).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pcapvision.errors import ParameterError
from pcapvision.ingest import flowbuffers
from pcapvision.ingest.emission import finish_flows, output_order, to_record_batch, to_records
from pcapvision.ingest.flowbuffers import GAPS, LISTS, PAGES, RUNS, Pools, add_listed, new_pools
from pcapvision.ingest.flowkey import packet_keys
from pcapvision.ingest.flowschema import END_ACTIVE, END_EOC, END_FIN, END_IDLE, END_OPEN, END_RST
from pcapvision.ingest.flowtable import (
    EMPTY,
    F_BASE,
    F_BYTES,
    F_CODE,
    F_DONE,
    F_END,
    F_FIN,
    F_FIRST_DIR,
    F_FIRST_FRAME,
    F_FIRST_TS,
    F_HASH,
    F_HOLE,
    F_LISTED,
    F_MAX_TS,
    F_PAYLEN,
    F_PAYLOAD_BYTES,
    F_PKTS,
    F_PREV_TS,
    F_SEEN_HI,
    F_SYN_DIR,
    INT64_MAX,
    Slots,
    grow_slots,
    new_slots,
    new_table,
    rehash,
    remove_open,
)
from pcapvision.ingest.jit import compiled, compiled_inline
from pcapvision.ingest.packets import ACK, FIN, PROTO_TCP, RST, SYN, PacketBatch
from pcapvision.ingest.reassembly import OUT_OF_ORDER, OVERLAPPING, RETRANSMITTED, place_tcp, place_udp
from pcapvision.ingest.seqgaps import note_segment
from pcapvision.validation import check_choice, check_int, check_positive_number

log = logging.getLogger(__name__)

__all__ = ["ON_HOLE", "FlowOptions", "FlowAssembler", "assemble_flows", "assemble_flow_batches"]

_MAX_TIMEOUT_S = 1e9
# Payload bytes kept per column and flow at most: each open flow holds page tables sized by it
# (16 bytes per 4 KiB), and one batch of flows must fit in a binary column (2 GiB).
_MAX_BYTES_LIMIT = 1 << 20
ON_HOLE = ("stop", "skip")
# Pool entries one packet may take at most: a run page, a list page, two gap nodes, and stream and
# mask pages (two page tables' worth), and a slot. The compiled loop stops before a packet when a
# pool has less, to be grown.
_NEED = {RUNS: 1, LISTS: 1, GAPS: 2}
_COUNTERS = {RETRANSMITTED: "retransmitted_segments", OVERLAPPING: "overlapping_segments",
             OUT_OF_ORDER: "out_of_order_segments"}


@dataclass(frozen=True)
class FlowOptions:
    """How flows are cut and how much of each is kept."""

    idle_timeout_s: float = 120.0
    active_timeout_s: float = 1800.0
    max_bytes: int = 4096  # payload bytes kept per flow (payload, src2dst_payload, dst2src_payload each)
    max_packets: int = 64  # packets kept in the per-packet lists
    on_hole: str = "stop"  # TCP payload at a hole never filled: "stop" there, or "skip" it and go on

    def __post_init__(self) -> None:
        check_choice("on_hole", self.on_hole, ON_HOLE)
        # Timeouts become int64 nanoseconds: bound them well inside that range (~31 years).
        object.__setattr__(self, "idle_timeout_s",
                           check_positive_number("idle_timeout_s", self.idle_timeout_s, max_value=_MAX_TIMEOUT_S))
        object.__setattr__(self, "active_timeout_s",
                           check_positive_number("active_timeout_s", self.active_timeout_s, max_value=_MAX_TIMEOUT_S))
        object.__setattr__(self, "max_bytes",
                           check_int("max_bytes", self.max_bytes, min_value=0, max_value=_MAX_BYTES_LIMIT))
        object.__setattr__(self, "max_packets", check_int("max_packets", self.max_packets, min_value=0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FlowAssembler:
    """Incremental flow assembler: feed batches with :meth:`add`, then call :meth:`flush`.

    ``stats`` counts ``packets``, ``flows``, and, within the collected payload prefix of TCP
    directions, ``retransmitted_segments`` (no new byte), ``overlapping_segments`` (some new
    bytes, some already there), ``out_of_order_segments`` (starting beyond the contiguous prefix),
    and ``flows_with_payload_hole`` (a direction ended with bytes stranded after a hole).
    """

    def __init__(self, options: FlowOptions = FlowOptions()) -> None:
        if not isinstance(options, FlowOptions):
            raise ParameterError(f"The 'options' parameter must be a FlowOptions. Got {options!r} instead.")
        self.options = options
        self.stats: Counter[str] = Counter()
        self._idle_ns = int(round(options.idle_timeout_s * 1e9))
        self._active_ns = int(round(options.active_timeout_s * 1e9))
        self._max_bytes = options.max_bytes
        self._max_packets = options.max_packets
        self._clock: int | None = None
        page, table_pages = flowbuffers.page_layout(options.max_bytes)
        self.slots: Slots = new_slots(1024, table_pages)
        self.pools: Pools = new_pools(page, max(256, 2 * table_pages))
        self._need = {PAGES: 2 * table_pages, **_NEED}
        self.table = new_table(2048)
        self._open_count = np.zeros(1, np.int64)
        self._counters = np.zeros(len(_COUNTERS), np.int64)

    # --- public API ---------------------------------------------------------------------------

    @property
    def open_flows(self) -> int:
        """Number of flows currently open (memory is proportional to it)."""
        return int(self._open_count[0])

    def add(self, batch: PacketBatch) -> list[dict[str, Any]]:
        """Assemble one batch; return the flows that ended during it, as dicts."""
        return to_records(finish_flows(self, *self._advance(batch)))

    def flush(self) -> list[dict[str, Any]]:
        """End every open flow (``end_of_capture`` unless closed by FIN/RST) and return them."""
        return to_records(finish_flows(self, *self._end_all()))

    def add_columns(self, batch: PacketBatch) -> pa.RecordBatch:
        """Like :meth:`add`, as an Arrow record batch of :data:`FLOW_SCHEMA` (no per-flow dicts)."""
        return to_record_batch(finish_flows(self, *self._advance(batch)))

    def flush_columns(self) -> pa.RecordBatch:
        """Like :meth:`flush`, as an Arrow record batch of :data:`FLOW_SCHEMA`."""
        return to_record_batch(finish_flows(self, *self._end_all()))

    def flush_column_batches(self, max_flows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
        """Like :meth:`flush_columns`, the same rows in several record batches of at most
        ``max_flows`` flows and about ``max_bytes`` payload bytes (a flow larger than that alone).

        At the end of a capture most flows may still be open: building all their columns at
        once would hold a second copy of every buffer; slices are built one at a time, each
        freeing its flows' pages.
        """
        return self._emit(*self._end_all(), max_flows, max_bytes)

    def _emitted_bytes(self, slots: np.ndarray) -> np.ndarray:
        """Bytes each flow will emit: its contiguous stream prefixes and its interleaved payload."""
        state = self.slots.state
        return state[slots, F_END] + state[slots, F_END + 1] + state[slots, F_PAYLEN]

    def _emit(self, slots: np.ndarray, codes: np.ndarray, max_flows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
        """The ended flows in ``slots``, in output order, as record batches within the bounds."""
        order = output_order(self, slots)
        slots, codes = slots[order], codes[order]
        emitted = np.cumsum(self._emitted_bytes(slots))
        start = 0
        while start < len(slots):
            before = int(emitted[start - 1]) if start else 0
            stop = min(start + max_flows, int(np.searchsorted(emitted, before + max_bytes, side="right")))
            stop = max(stop, start + 1)
            yield to_record_batch(finish_flows(self, slots[start:stop], codes[start:stop]))
            start = stop

    # --- per batch ----------------------------------------------------------------------------

    def _advance(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """Assemble one batch; the slots of the flows that ended and their end codes."""
        n = len(batch)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int8)
        self.stats["packets"] += n
        # The table stays at most half full even if every packet starts a flow.
        if 2 * (self.open_flows + n) > self.table.shape[0]:
            table = new_table(4 * (self.open_flows + n))
            rehash(self.table, table, self.slots.state)
            self.table = table
        words, direction, hashes = packet_keys(batch)
        ended = np.empty(n, np.int64)
        ended_codes = np.empty(n, np.int8)
        counts = np.zeros(2, np.int64)  # flows ended, flows started
        start = 0
        while True:
            start = _assemble_packets(
                start, words, direction, hashes, batch.ts_ns, batch.frame_index, batch.tcp_flags,
                batch.payload_len, batch.ip_bytes, batch.tcp_seq, batch.payload_offset, batch.data,
                self._idle_ns, self._active_ns, self._max_bytes, self._max_packets,
                self.slots, self.pools, self.table, self._open_count, self._counters, ended, ended_codes, counts)
            if start == n:
                break
            # A pool or the free slots ran short before packet ``start``: grow them.
            for kind, need in self._need.items():
                self.pools = flowbuffers.reserve(self.pools, kind, max(need, 4096))
            if self.slots.free_count[0] == 0:
                self.slots = grow_slots(self.slots, 2 * self.slots.state.shape[0])
        self.stats["flows"] += int(counts[1])
        for index, name in _COUNTERS.items():
            self.stats[name] = int(self._counters[index])  # running totals kept by the compiled loop
        ended, ended_codes = ended[: counts[0]], ended_codes[: counts[0]]
        batch_max = int(batch.ts_ns.max())
        self._clock = batch_max if self._clock is None else max(self._clock, batch_max)
        # Expire flows idle for longer than the timeout on the capture clock (free and ended
        # slots have prev_ts = INT64_MAX).
        expired = np.flatnonzero(self.slots.state[:, F_PREV_TS] < self._clock - self._idle_ns)
        if len(expired):
            remove_open(self.table, expired, self.slots.state)
            self.slots.state[expired, F_PREV_TS] = INT64_MAX  # ended, whenever they are emitted
            self._open_count[0] -= len(expired)
            ended = np.concatenate([ended, expired])
            ended_codes = np.concatenate([ended_codes, np.full(len(expired), END_IDLE, np.int8)])
        return ended, ended_codes

    def _end_all(self) -> tuple[np.ndarray, np.ndarray]:
        slots = self.table[self.table != EMPTY]
        self.table[:] = EMPTY
        self._open_count[0] = 0
        return slots, np.full(len(slots), END_EOC, np.int8)


@compiled
def _assemble_packets(start, words, direction, hashes, ts, frame, flags, plen, ipb, seq, poff, data,
                      idle, active, max_bytes, max_packets, S, P, table, open_count, counters, ended,
                      ended_codes, counts):  # pragma: no cover - compiled
    """Assemble packets ``start``... of a batch in capture order; return the index of the first
    packet not assembled: ``len(ts)``, or earlier when a pool or the free slots may run short for
    the next one."""
    # Plain arrays, not tuple fields, in the loop (each field access would update reference counts).
    state, keys, tables = S.state, S.words, S.tables
    slot_free, slot_free_count = S.free, S.free_count
    pages, runs, run_next, free, free_count = P.pages, P.runs, P.run_next, P.free, P.free_count
    list_time, list_bytes, list_lengths, list_next = P.list_time, P.list_bytes, P.list_lengths, P.list_next
    gaps, gap_next = P.gaps, P.gap_next
    mask = table.shape[0] - 1
    for i in range(start, ts.shape[0]):
        if (free_count[PAGES] < 2 * tables.shape[2] or free_count[RUNS] < 1 or free_count[LISTS] < 1
                or free_count[GAPS] < 2 or slot_free_count[0] < 1):
            return i
        t = ts[i]
        d = direction[i]
        f = flags[i]
        syn = (f & (SYN | ACK)) == SYN
        # Look the key up; ``j`` ends on its entry, or on the empty entry where it goes.
        j = hashes[i] & mask
        s = -1
        while table[j] != EMPTY:
            c = table[j]
            if (keys[c, 0] == words[i, 0] and keys[c, 1] == words[i, 1] and keys[c, 2] == words[i, 2]
                    and keys[c, 3] == words[i, 3] and keys[c, 4] == words[i, 4]):
                s = c
                break
            j = (j + 1) & mask
        if s >= 0:
            gap_idle = t - state[s, F_PREV_TS] > idle
            if gap_idle or (syn and state[s, F_CODE] != END_OPEN) or t - state[s, F_FIRST_TS] > active:
                ended[counts[0]] = s
                ended_codes[counts[0]] = END_IDLE if gap_idle else END_ACTIVE
                counts[0] += 1
                state[s, F_PREV_TS] = INT64_MAX  # ended: out of this batch's expiry
                s = -1
        if s < 0:
            slot_free_count[0] -= 1
            s = slot_free[slot_free_count[0]]
            if table[j] == EMPTY:
                open_count[0] += 1
            table[j] = s
            counts[1] += 1
            keys[s] = words[i]
            _start_flow(state, s, hashes[i], t, frame[i], d, max_bytes)
        # Counters, times, TCP closure.
        state[s, F_MAX_TS] = max(state[s, F_MAX_TS], t)
        state[s, F_PREV_TS] = t
        state[s, F_PKTS + d] += 1
        state[s, F_BYTES + d] += ipb[i]
        state[s, F_PAYLOAD_BYTES + d] += plen[i]
        if syn and state[s, F_SYN_DIR] < 0:
            state[s, F_SYN_DIR] = d
        if state[s, F_CODE] == END_OPEN:
            if f & RST:  # whichever of "an RST" or "FINs from both sides" comes first closes
                state[s, F_CODE] = END_RST
            elif f & FIN:
                state[s, F_FIN + d] = 1
                if state[s, F_FIN] and state[s, F_FIN + 1]:
                    state[s, F_CODE] = END_FIN
        if state[s, F_LISTED] < max_packets:
            add_listed(list_time, list_bytes, list_lengths, list_next, free, free_count, state, s,
                       (t - state[s, F_FIRST_TS]) / 1e6, d, plen[i], ipb[i], f)
        # Payload and TCP sequence space.
        n = np.int64(plen[i])
        if ((keys[s, 4] >> np.uint64(32)) & np.uint64(0xFF)) == PROTO_TCP:
            syn_flag = (f & SYN) != 0
            if n > 0 or syn_flag:
                dseq = (np.int64(seq[i]) + (1 if syn_flag else 0)) & 0xFFFFFFFF  # data follows a SYN
                if state[s, F_BASE + d] < 0:  # the initial sequence number: first SYN or data segment
                    state[s, F_BASE + d] = dseq
                if n > 0:
                    rel = (dseq - state[s, F_BASE + d]) & 0xFFFFFFFF
                    if rel >= 0x80000000:
                        rel -= 0x100000000
                    if rel + n > max(rel, 0):
                        note_segment(gaps, gap_next, free, free_count, state, s, d, max(rel, 0), rel + n)
                    if not state[s, F_DONE + d]:
                        place_tcp(state, tables, pages, runs, run_next, free, free_count, s, d, data, poff[i], rel,
                                  n, max_bytes, counters)
        elif n > 0 and not state[s, F_DONE + d]:
            place_udp(state, tables, pages, runs, run_next, free, free_count, s, d, data, poff[i], n, max_bytes)
    return ts.shape[0]


@compiled_inline
def _start_flow(state, s, h, t, frame, d, max_bytes):  # pragma: no cover - compiled
    """A new flow in slot ``s`` (its list, run, gap heads and page tables were reset when freed)."""
    state[s, F_FIRST_TS] = t
    state[s, F_MAX_TS] = t
    state[s, F_FIRST_FRAME] = frame
    state[s, F_FIRST_DIR] = d
    state[s, F_SYN_DIR] = -1
    state[s, F_CODE] = END_OPEN
    state[s, F_PAYLEN] = 0
    state[s, F_LISTED] = 0
    state[s, F_HASH] = h
    for k in range(2):
        state[s, F_PKTS + k] = 0
        state[s, F_BYTES + k] = 0
        state[s, F_PAYLOAD_BYTES + k] = 0
        state[s, F_FIN + k] = 0
        state[s, F_DONE + k] = max_bytes == 0
        state[s, F_BASE + k] = -1
        state[s, F_END + k] = 0
        state[s, F_HOLE + k] = 0
        state[s, F_SEEN_HI + k] = 0


def assemble_flows(batches: Iterable[PacketBatch], options: FlowOptions = FlowOptions()) -> Iterator[dict[str, Any]]:
    """Flow records of a stream of packet batches, yielded as flows end (see :class:`FlowAssembler`)."""
    assembler = FlowAssembler(options)
    for batch in batches:
        yield from assembler.add(batch)
    yield from assembler.flush()
    log.debug("flow assembly: %s", dict(assembler.stats))


def assemble_flow_batches(
    batches: Iterable[PacketBatch], options: FlowOptions = FlowOptions(), *,
    flush_flows: int | None = None, flush_bytes: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """The flows of :func:`assemble_flows` as Arrow record batches of :data:`FLOW_SCHEMA`; skips
    building a dict per flow. Without bounds, one batch per input batch that ended flows, then
    the flush. With ``flush_flows`` / ``flush_bytes``, ended flows are held back until that many
    flows or payload bytes are pending, and every batch has at most ``flush_flows`` flows and
    about ``flush_bytes`` payload bytes (fewer, larger batches: no regrouping copy downstream)."""
    assembler = FlowAssembler(options)
    if flush_flows is None and flush_bytes is None:
        for batch in batches:
            ended = assembler.add_columns(batch)
            if ended.num_rows:
                yield ended
        flushed = assembler.flush_columns()
        if flushed.num_rows:
            yield flushed
    else:
        max_flows, max_bytes = flush_flows or INT64_MAX, flush_bytes or INT64_MAX
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        flows = size = 0
        for batch in batches:
            slots, codes = assembler._advance(batch)
            if len(slots):
                pending.append((slots, codes))
                flows += len(slots)
                size += int(assembler._emitted_bytes(slots).sum())
            if flows >= max_flows or size >= max_bytes:
                yield from assembler._emit(*map(np.concatenate, zip(*pending)), max_flows, max_bytes)
                pending, flows, size = [], 0, 0
        pending.append(assembler._end_all())
        yield from assembler._emit(*map(np.concatenate, zip(*pending)), max_flows, max_bytes)
    log.debug("flow assembly: %s", dict(assembler.stats))
