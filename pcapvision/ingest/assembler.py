"""Flow assembly: a stream of :class:`~pcapvision.ingest.packets.PacketBatch` -> finished flows.

Packets are grouped into bidirectional flows by their canonical 5-tuple, split by timeouts and TCP
closure, counted per direction, and their payload is kept (TCP reassembled by sequence number).
The work is vectorised per chunk: packets are grouped by key with one sort, counters are updated
with ``bincount``, in-order payload is located with array arithmetic; Python runs per (flow,
chunk) while a flow still fills its ``packet_*`` lists or payload, per packet only for TCP
directions with a sequence hole, and per flow when it is emitted (as a dict, or as a row of an
Arrow record batch with :meth:`FlowAssembler.add_columns` / :func:`assemble_flow_batches`).
This module cuts flows (keys looked up, timeouts, closure, counters) and drives the others:
:mod:`.flowkey` groups a batch's packets by canonical key, :mod:`.flowtable` holds the per-slot
state of the flows, :mod:`.flowbuffers` their ``packet_*`` lists, :mod:`.reassembly` collects their
payload, :mod:`.emission` builds the columns of :mod:`.flowschema`'s table when flows end.

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
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from pcapvision.errors import ParameterError
from pcapvision.ingest.emission import finish_flows, output_order, to_record_batch, to_records
from pcapvision.ingest.flowbuffers import FlowBuffers, collect_lists
from pcapvision.ingest.flowkey import group_packets
from pcapvision.ingest.flowschema import END_ACTIVE, END_EOC, END_FIN, END_IDLE, END_OPEN, END_RST
from pcapvision.ingest.flowtable import INT64_MAX, FlowTable
from pcapvision.ingest.packets import ACK, FIN, PROTO_TCP, RST, SYN, PacketBatch
from pcapvision.ingest.reassembly import collect_payload
from pcapvision.validation import check_choice, check_int, check_positive_number

log = logging.getLogger(__name__)

__all__ = ["ON_HOLE", "FlowOptions", "FlowAssembler", "assemble_flows", "assemble_flow_batches"]

_NEVER = INT64_MAX  # position sentinel for "no such packet in the segment"
_MAX_TIMEOUT_S = 1e9
_MAX_BYTES_LIMIT = 1 << 30  # offsets are computed modulo 2**32 with a sign bit: keep far below
ON_HOLE = ("stop", "skip")


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


def _segment_reduce(values: np.ndarray, starts: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    return ufunc.reduceat(values, starts) if len(values) else values[:0]


class FlowAssembler(FlowTable):
    """Incremental flow assembler: feed batches with :meth:`add`, then call :meth:`flush`.

    ``stats`` counts ``packets``, ``flows``, and, within the collected payload prefix of TCP
    directions, ``retransmitted_segments`` (no new byte), ``overlapping_segments`` (some new
    bytes, some already there), ``out_of_order_segments`` (starting beyond the contiguous prefix),
    ``flows_with_payload_hole`` (a direction ended with bytes stranded after a hole), and
    ``hash_collision_batches`` (batches regrouped exactly after a 64-bit key hash collision).
    """

    def __init__(self, options: FlowOptions = FlowOptions()) -> None:
        if not isinstance(options, FlowOptions):
            raise ParameterError(f"The 'options' parameter must be a FlowOptions. Got {options!r} instead.")
        self.options = options
        self.stats: Counter[str] = Counter()
        self._idle_ns = int(round(options.idle_timeout_s * 1e9))
        self._active_ns = int(round(options.active_timeout_s * 1e9))
        self._max_packets = options.max_packets
        self._clock: int | None = None
        super().__init__(options.max_bytes)

    # --- public API ---------------------------------------------------------------------------

    @property
    def open_flows(self) -> int:
        """Number of flows currently open (memory is proportional to it)."""
        return len(self._open)

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
        once would hold a second copy of every buffer (and fault in that much fresh memory);
        slices are built one at a time, each freeing its flows' buffers.
        """
        slots, codes = self._end_all()
        order = output_order(self, slots)
        slots, codes = slots[order], codes[order]
        # Bytes each flow will emit: the contiguous stream prefixes and the interleaved payload.
        emitted = np.cumsum(self._end[slots].sum(axis=1) + self._paylen[slots])
        start = 0
        while start < len(slots):
            before = int(emitted[start - 1]) if start else 0
            stop = min(start + max_flows, int(np.searchsorted(emitted, before + max_bytes, side="right")))
            stop = max(stop, start + 1)
            yield to_record_batch(finish_flows(self, slots[start:stop], codes[start:stop]))
            start = stop

    def _advance(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """Assemble one batch; the slots of the flows that ended and their end codes."""
        if len(batch) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int8)
        self.stats["packets"] += len(batch)
        ended_slots, ended_codes = self._assemble(batch)
        batch_max = int(batch.ts_ns.max())
        self._clock = batch_max if self._clock is None else max(self._clock, batch_max)
        # Expire flows idle for longer than the timeout on the capture clock.
        expired = np.flatnonzero(self._prev_ts < self._clock - self._idle_ns)
        if len(expired):
            for slot in expired.tolist():
                key = self._keys[slot]
                if self._open.get(key) == slot:
                    del self._open[key]
            ended_slots = np.concatenate([ended_slots, expired])
            ended_codes = np.concatenate([ended_codes, np.full(len(expired), END_IDLE, np.int8)])
        return ended_slots, ended_codes

    def _end_all(self) -> tuple[np.ndarray, np.ndarray]:
        slots = np.array(list(self._open.values()), np.int64)
        self._open.clear()
        return slots, np.full(len(slots), END_EOC, np.int8)


    # --- per-batch assembly -------------------------------------------------------------------

    def _assemble(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        idle, active = self._idle_ns, self._active_ns
        order, gstart, dc, sorted_words = group_packets(batch, self.stats)
        n = len(order)
        G = len(gstart)
        ts = batch.ts_ns[order].astype(np.int64, copy=False)
        fl = batch.tcp_flags[order]
        plen = batch.payload_len[order].astype(np.int64)

        rep_words = np.take(sorted_words, gstart, axis=0)
        keys = rep_words.view(np.dtype((np.void, 40))).ravel().tolist()
        slot_in = np.fromiter(map(self._open.get, keys, repeat(-1)), np.int64, G)

        syn = (fl & (SYN | ACK)) == SYN
        gid = np.zeros(n, np.int64)
        gid[gstart[1:]] = 1
        gid = np.cumsum(gid)
        gend = np.append(gstart[1:], n)

        # Group starts on an open flow: does the first packet continue it?
        cont = slot_in >= 0
        ended_at_start = np.zeros(G, bool)
        start_idle = np.zeros(G, bool)
        if cont.any():
            ci = np.flatnonzero(cont)
            cs = slot_in[ci]
            t0 = ts[gstart[ci]]
            gap_idle = t0 - self._prev_ts[cs] > idle
            split = gap_idle | (syn[gstart[ci]] & (self._code[cs] != END_OPEN)) | (t0 - self._first_ts[cs] > active)
            ended_at_start[ci[split]] = True
            start_idle[ci[split & gap_idle]] = True
            cont[ci[split]] = False

        # Boundaries: group starts and idle gaps within groups (unconditional).
        bnd = np.zeros(n, bool)
        bnd[gstart] = True
        gap = np.zeros(n, np.int64)
        gap[1:] = ts[1:] - ts[:-1]
        idle_gap = gap > idle
        idle_gap[gstart] = False
        bnd |= idle_gap

        # Carried-in state of each group's first segment (fresh for new flows).
        cont_idx = np.flatnonzero(cont)
        g_closed = np.zeros(G, bool)
        g_f0 = np.zeros(G, bool)
        g_f1 = np.zeros(G, bool)
        g_first = ts[gstart].copy()
        if len(cont_idx):
            cs = slot_in[cont_idx]
            g_closed[cont_idx] = self._code[cs] != END_OPEN
            g_f0[cont_idx] = self._fin[cs, 0]
            g_f1[cont_idx] = self._fin[cs, 1]
            g_first[cont_idx] = self._first_ts[cs]

        # Closure (SYN after close) and active-timeout splits: find segments that have one
        # vectorised, then scan only those segments packet by packet (they are rare).
        is_rst = (fl & RST) != 0
        is_fin = (fl & FIN) != 0
        fin0 = is_fin & (dc == 0)
        fin1 = is_fin & (dc == 1)
        seg_start = np.flatnonzero(bnd)
        seg_id = np.cumsum(bnd) - 1
        first_of_group = np.zeros(len(seg_start), bool)
        seg_gid = gid[seg_start]
        first_of_group[np.searchsorted(seg_start, gstart)] = True
        s_closed = np.where(first_of_group, g_closed[seg_gid], False)
        s_f0 = np.where(first_of_group, g_f0[seg_gid], False)
        s_f1 = np.where(first_of_group, g_f1[seg_gid], False)
        s_first = np.where(first_of_group, g_first[seg_gid], ts[seg_start])

        def before(x: np.ndarray) -> np.ndarray:
            """Per position: does any earlier packet of its segment have ``x``?"""
            c = np.cumsum(x) - x
            return (c - c[seg_start][seg_id]) > 0

        closed_before = (s_closed[seg_id] | before(is_rst)
                         | ((s_f0[seg_id] | before(fin0)) & (s_f1[seg_id] | before(fin1))))
        cand = ((syn & closed_before) | (ts - s_first[seg_id] > active)) & ~bnd
        cause_active = np.zeros(n, bool)  # boundary caused by the active timeout
        if cand.any():
            segs = np.unique(seg_id[cand])
            seg_end_all = np.append(seg_start[1:], n)
            new_b, new_active = self._scan_splits(
                segs, seg_start, seg_end_all, ts, fl, dc, syn, s_closed, s_f0, s_f1, s_first)
            bnd[new_b] = True
            cause_active[new_active] = True
            seg_start = np.flatnonzero(bnd)
            seg_id = np.cumsum(bnd) - 1
            seg_gid = gid[seg_start]
            first_of_group = np.zeros(len(seg_start), bool)
            first_of_group[np.searchsorted(seg_start, gstart)] = True

        S = len(seg_start)
        seg_end = np.append(seg_start[1:], n)
        last_of_group = np.zeros(S, bool)
        last_of_group[np.searchsorted(seg_start, gend) - 1] = True
        seg_cont = first_of_group & cont[seg_gid]

        # Slots: continued flows keep theirs; every other segment is a new flow.
        slots = np.where(seg_cont, slot_in[seg_gid], -1)
        new_seg = np.flatnonzero(~seg_cont)
        new_slots = self._alloc(len(new_seg))
        slots[new_seg] = new_slots
        self.stats["flows"] += len(new_seg)
        first_pos = seg_start[new_seg]
        self._first_ts[new_slots] = ts[first_pos]
        self._max_ts[new_slots] = ts[first_pos]
        self._first_frame[new_slots] = batch.frame_index[order[first_pos]]
        self._first_dir[new_slots] = dc[first_pos]
        self._words[new_slots] = np.take(sorted_words, first_pos, axis=0)
        bufs, slot_keys = self._bufs, self._keys
        for g, slot in zip(seg_gid[new_seg].tolist(), new_slots.tolist()):
            slot_keys[slot] = keys[g]
            bufs[slot] = FlowBuffers()

        # Counters, times, TCP state.
        key2 = seg_id * 2 + dc
        ipb = batch.ip_bytes[order].astype(np.int64)
        self._pkts[slots] += np.bincount(key2, minlength=2 * S).reshape(S, 2)
        self._bytes[slots] += np.bincount(key2, weights=ipb, minlength=2 * S).astype(np.int64).reshape(S, 2)
        self._pbytes[slots] += np.bincount(key2, weights=plen, minlength=2 * S).astype(np.int64).reshape(S, 2)
        self._max_ts[slots] = np.maximum(self._max_ts[slots], _segment_reduce(ts, seg_start, np.maximum))
        self._prev_ts[slots] = ts[seg_end - 1]
        pos = np.arange(n, dtype=np.int64)
        first_syn = _segment_reduce(np.where(syn, pos, _NEVER), seg_start, np.minimum)
        has_syn = (first_syn != _NEVER) & (self._syn_dir[slots] < 0)
        self._syn_dir[slots[has_syn]] = dc[first_syn[has_syn]]
        # Closure: whichever of "an RST" or "FINs from both sides" came first.
        code = self._code[slots]
        f_rst = _segment_reduce(np.where(is_rst, pos, _NEVER), seg_start, np.minimum)
        f0 = np.where(self._fin[slots, 0], -1, _segment_reduce(np.where(fin0, pos, _NEVER), seg_start, np.minimum))
        f1 = np.where(self._fin[slots, 1], -1, _segment_reduce(np.where(fin1, pos, _NEVER), seg_start, np.minimum))
        f_both = np.maximum(f0, f1)
        newly = (code == END_OPEN) & ((f_rst != _NEVER) | (f_both != _NEVER))
        code[newly] = np.where(f_rst[newly] <= f_both[newly], END_RST, END_FIN)
        self._code[slots] = code
        self._fin[slots, 0] |= f0 != _NEVER
        self._fin[slots, 1] |= f1 != _NEVER

        if self._max_packets:
            collect_lists(self, slots, seg_start, seg_id, ts, dc, fl, plen, ipb)
        seg_tcp = ((sorted_words[seg_start, 4] >> np.uint64(32)) & np.uint64(0xFF)) == PROTO_TCP
        syn_flag = (fl & SYN) != 0
        # Sequence space seen per TCP direction (missed bytes); fixes each direction's initial
        # sequence number as payload collection would.
        seq_entries = np.flatnonzero(seg_tcp[seg_id] & ((plen > 0) | syn_flag))
        if len(seq_entries):
            self._gaps.add(self._base, slots[seg_id[seq_entries]], dc[seq_entries].astype(np.int64),
                           (batch.tcp_seq[order[seq_entries]].astype(np.int64) + syn_flag[seq_entries]) & 0xFFFFFFFF,
                           plen[seq_entries])
        if self._max_bytes:
            collect_payload(self, batch, order, slots, seg_id, dc, syn_flag, plen, seg_tcp)

        # Open flows: the last segment of each group.
        for g, slot in zip(seg_gid[last_of_group].tolist(), slots[last_of_group].tolist()):
            self._open[keys[g]] = slot

        # Ended flows: carried flows split at their group's start, and segments followed by
        # another one of the same tuple; the reason is closure, else what caused the split.
        old = np.flatnonzero(ended_at_start)
        old_slots = slot_in[old]
        old_codes = np.where(start_idle[old], END_IDLE, END_ACTIVE).astype(np.int8)
        mid = np.flatnonzero(~last_of_group)
        nxt = seg_start[mid + 1]
        mid_codes = np.where(cause_active[nxt], END_ACTIVE, END_IDLE).astype(np.int8)
        ended = np.concatenate([old_slots, slots[mid]])
        self._prev_ts[ended] = INT64_MAX  # ended here: keep them out of this batch's expiry
        return ended, np.concatenate([old_codes, mid_codes])

    def _scan_splits(
        self, segs: np.ndarray, seg_start: np.ndarray, seg_end: np.ndarray, ts: np.ndarray, fl: np.ndarray,
        dc: np.ndarray, syn: np.ndarray, s_closed: np.ndarray, s_f0: np.ndarray, s_f1: np.ndarray,
        s_first: np.ndarray,
    ) -> tuple[list[int], list[int]]:
        """Walk the segments ``segs`` packet by packet; return the positions where a new flow
        starts (SYN on a closed flow, or active timeout) and those caused by the active timeout."""
        active = self._active_ns
        boundaries: list[int] = []
        by_active: list[int] = []
        for s in segs.tolist():
            a, e = int(seg_start[s]), int(seg_end[s])
            closed, f0, f1, first = bool(s_closed[s]), bool(s_f0[s]), bool(s_f1[s]), int(s_first[s])
            for j, (t, f, d, is_syn) in enumerate(zip(ts[a:e].tolist(), fl[a:e].tolist(), dc[a:e].tolist(),
                                                     syn[a:e].tolist())):
                if j:
                    timed_out = t - first > active
                    if (is_syn and closed) or timed_out:
                        boundaries.append(a + j)
                        if timed_out and not closed:
                            by_active.append(a + j)
                        closed = f0 = f1 = False
                        first = t
                if f & RST:
                    closed = True
                if f & FIN:
                    if d:
                        f1 = True
                    else:
                        f0 = True
                    if f0 and f1:
                        closed = True
        return boundaries, by_active


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
    """The flows of :func:`assemble_flows` as Arrow record batches of :data:`FLOW_SCHEMA` (one per
    input batch that ended flows, then the flush: one batch, or slices of at most ``flush_flows``
    flows and about ``flush_bytes`` payload bytes when given); skips building a dict per flow."""
    assembler = FlowAssembler(options)
    for batch in batches:
        ended = assembler.add_columns(batch)
        if ended.num_rows:
            yield ended
    if flush_flows is None and flush_bytes is None:
        flushed: Iterable[pa.RecordBatch] = [assembler.flush_columns()]
    else:
        flushed = assembler.flush_column_batches(flush_flows or INT64_MAX, flush_bytes or INT64_MAX)
    yield from (ended for ended in flushed if ended.num_rows)
    log.debug("flow assembly: %s", dict(assembler.stats))
