"""Flow assembly: a stream of :class:`~pcapvision.ingest.packets.PacketBatch` -> finished flows.

Packets are grouped into bidirectional flows by their canonical 5-tuple, split by timeouts and TCP
closure, counted per direction, and their payload is kept (TCP reassembled by sequence number).
The work is vectorised per chunk: packets are grouped by key with one sort, counters are updated
with ``bincount``, in-order payload is located with array arithmetic; Python runs per (flow,
chunk) while a flow still fills its ``packet_*`` lists or payload, per packet only for TCP
directions with a sequence hole, and per flow when it is emitted (as a dict, or as a row of an
Arrow record batch with :meth:`FlowAssembler.add_columns` / :func:`assemble_flow_batches`).
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

import functools
import logging
import socket
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from pcapvision.errors import ParameterError
from pcapvision.ingest.community_id import community_ids
from pcapvision.ingest.jit import compiled
from pcapvision.ingest.packets import ACK, FIN, PROTO_TCP, RST, SYN, PacketBatch, format_address
from pcapvision.ingest.seqgaps import SequenceGaps
from pcapvision.ingest.tls import client_hello_metadata
from pcapvision.validation import check_choice, check_int, check_positive_number

log = logging.getLogger(__name__)

__all__ = ["FLOW_COLUMNS", "FLOW_SCHEMA", "FLOW_SCHEMA_FIELDS", "END_REASONS", "FlowOptions", "FlowAssembler",
           "assemble_flows", "assemble_flow_batches"]

FLOW_SCHEMA_FIELDS: list[pa.Field] = [
    pa.field("community_id", pa.string(), nullable=False),
    pa.field("src_ip", pa.string(), nullable=False),
    pa.field("dst_ip", pa.string(), nullable=False),
    pa.field("src_port", pa.uint16(), nullable=False),
    pa.field("dst_port", pa.uint16(), nullable=False),
    pa.field("protocol", pa.uint8(), nullable=False),
    pa.field("ip_version", pa.uint8(), nullable=False),
    pa.field("vlan_id", pa.uint16(), nullable=False),
    pa.field("first_seen_ns", pa.int64(), nullable=False),
    pa.field("last_seen_ns", pa.int64(), nullable=False),
    pa.field("duration_ms", pa.float64(), nullable=False),
    pa.field("src2dst_packets", pa.int64(), nullable=False),
    pa.field("dst2src_packets", pa.int64(), nullable=False),
    pa.field("bidirectional_packets", pa.int64(), nullable=False),
    pa.field("src2dst_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_bytes", pa.int64(), nullable=False),
    pa.field("bidirectional_bytes", pa.int64(), nullable=False),
    pa.field("src2dst_payload_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_payload_bytes", pa.int64(), nullable=False),
    pa.field("src2dst_missed_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_missed_bytes", pa.int64(), nullable=False),
    pa.field("payload", pa.binary(), nullable=False),
    pa.field("src2dst_payload", pa.binary(), nullable=False),
    pa.field("dst2src_payload", pa.binary(), nullable=False),
    pa.field("src2dst_payload_holes", pa.list_(pa.int32()), nullable=False),
    pa.field("dst2src_payload_holes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_time_ms", pa.list_(pa.float64()), nullable=False),
    pa.field("packet_direction", pa.list_(pa.uint8()), nullable=False),
    pa.field("packet_payload_bytes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_ip_bytes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_tcp_flags", pa.list_(pa.uint8()), nullable=False),
    pa.field("tls_sni", pa.string(), nullable=True),
    pa.field("tls_version", pa.string(), nullable=True),
    pa.field("tls_ja3", pa.string(), nullable=True),
    pa.field("tls_ja3_hash", pa.string(), nullable=True),
    pa.field("end_reason", pa.string(), nullable=False),
]
FLOW_COLUMNS: list[str] = [f.name for f in FLOW_SCHEMA_FIELDS]
FLOW_SCHEMA = pa.schema(FLOW_SCHEMA_FIELDS)

# end_reason codes; the closure codes double as the TCP closure state of an open flow.
_OPEN, _FIN, _RST, _IDLE, _ACTIVE, _EOC = 0, 1, 2, 3, 4, 5
END_REASONS = ("", "fin", "rst", "idle_timeout", "active_timeout", "end_of_capture")

_INT64_MAX = np.iinfo(np.int64).max
_INT32_MAX = np.iinfo(np.int32).max
_NEVER = _INT64_MAX  # position sentinel for "no such packet in the segment"
_SWAP_DIRECTION = bytes([1, 0]) + bytes(254)  # bytes.translate table: 0 <-> 1
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


_INT32_CODE = "i" if array("i").itemsize == 4 else "l"  # array typecode of a C int32


class _FlowBuffers:
    """Python-side per-flow storage: the packet lists and the payload being collected.

    Only containers the garbage collector does not track (``array``, ``bytearray``) are kept per
    flow, so that many open flows do not slow every collection down.

    ``streams[d]`` is the contiguous prefix of canonical direction ``d``. A TCP direction that
    receives a segment beyond its prefix switches to hole mode: its stream becomes a ``max_bytes``
    buffer and ``holes[d]`` a mask of the bytes received (the contiguous length is ``_end``).

    The interleaved payload only ever takes a direction's next contiguous bytes, so it is kept as
    ``runs`` (``length << 1 | direction``) and cut from the streams at emission: no third copy
    of the bytes while the flow is open, and one slice per run instead of one per packet.
    """

    __slots__ = ("times", "dirs", "plens", "ipbytes", "flags", "streams", "holes", "runs")

    def __init__(self) -> None:
        self.times = array("d")  # ms since first_seen_ns
        self.dirs = bytearray()  # canonical directions; mapped to src/dst at emission
        self.plens = array(_INT32_CODE)
        self.ipbytes = array(_INT32_CODE)
        self.flags = bytearray()
        self.streams = (bytearray(), bytearray())
        self.holes: list[bytearray | None] | None = None
        self.runs = array("q")

    def add_run(self, d: int, length: int) -> None:
        """The next ``length`` bytes of direction ``d`` join the interleaved payload."""
        runs = self.runs
        if runs and runs[-1] & 1 == d:
            runs[-1] += length << 1
        else:
            runs.append(length << 1 | d)

    def to_hole_mode(self, d: int, max_bytes: int, end: int) -> bytearray:
        stream = self.streams[d]
        stream.extend(bytes(max_bytes - len(stream)))
        have = bytearray(max_bytes)
        have[:end] = b"\x01" * end
        if self.holes is None:
            self.holes = [None, None]
        self.holes[d] = have
        return have

    def payload(self, streams: tuple[bytes | bytearray, bytes | bytearray],
                after_holes: tuple[int, ...] = (), max_bytes: int = 0) -> bytes:
        """The interleaved payload, cut from the contiguous ``streams`` by ``runs``; then, for
        the directions in ``after_holes`` (in that order), the bytes of the stream no run took
        (those after a skipped hole), up to ``max_bytes`` in all."""
        taken = [0, 0]
        parts = []
        for run in self.runs:
            d, length = run & 1, run >> 1
            start = taken[d]
            parts.append(streams[d][start : start + length])
            taken[d] = start + length
        out = b"".join(parts)
        for d in after_holes:
            room = max_bytes - len(out)
            if room > 0:
                out += streams[d][taken[d] : taken[d] + room]
        return out

    def stream_bytes(self, d: int, end: int, skip: bool) -> tuple[bytes, list[int]]:
        """Direction ``d``'s bytes and the offsets in them where a hole is: with ``skip``, every
        run of received bytes, holes closed (each join's offset listed); otherwise the contiguous
        prefix ([its length] when bytes after a hole were stranded)."""
        have = self.holes[d] if self.holes is not None else None
        if have is None:
            return bytes(self.streams[d]), []
        stream = self.streams[d]
        if not skip:
            return bytes(stream[:end]), [end] if have.find(1, end) != -1 else []
        out = bytearray()
        joins = []
        i = 0
        while True:
            z = have.find(1, i)
            if z == -1:
                break
            if z > i:
                joins.append(len(out))
            o = have.find(0, z)
            o = len(have) if o == -1 else o
            out += stream[z:o]
            i = o
        return bytes(out), joins


def _address_text(packed: bytes, ip_version: int) -> str:
    if ip_version == 4:  # inet_ntop prints IPv4 exactly as format_address does, only faster
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return _ipv6_text(packed)


@functools.lru_cache(maxsize=1 << 14)
def _ipv6_text(packed: bytes) -> str:
    return format_address(packed, 6)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arithmetic wraps, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, groups: np.ndarray,
            n_groups: int) -> tuple[memoryview, np.ndarray]:
    """Concatenate the byte ranges ``data[start:start+length]`` in order; also return the total
    length per group (``groups`` sorted)."""
    totals = np.bincount(groups, weights=lengths, minlength=n_groups).astype(np.int64)
    out = np.empty(int(totals.sum()), np.uint8)
    _copy_ranges(data, starts, lengths, out)
    return memoryview(out), totals


@compiled
def _copy_ranges(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """``out`` = the ranges ``data[starts[i] : starts[i] + lengths[i]]`` one after another (one
    compiled loop instead of a Python slice and a ``bytes`` object per payload piece)."""
    pos = 0
    for i in range(starts.shape[0]):
        n = lengths[i]
        if n > 0:
            out[pos : pos + n] = data[starts[i] : starts[i] + n]
            pos += n


def _segment_reduce(values: np.ndarray, starts: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    return ufunc.reduceat(values, starts) if len(values) else values[:0]


class FlowAssembler:
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
        self._max_bytes = options.max_bytes
        self._max_packets = options.max_packets
        self._clock: int | None = None
        self._open: dict[bytes, int] = {}  # exact key -> slot of the open flow
        self._free: list[int] = []
        self._capacity = 0
        self._keys: list[bytes | None] = []
        self._bufs: list[_FlowBuffers | None] = []
        self._gaps = SequenceGaps()
        self._grow(1024)

    # --- slot storage -------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self._capacity

        def extend(name: str, shape_tail: tuple[int, ...], dtype: Any, fill: Any) -> None:
            arr = np.full((capacity, *shape_tail), fill, dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)

        extend("_first_ts", (), np.int64, 0)
        extend("_max_ts", (), np.int64, 0)
        extend("_prev_ts", (), np.int64, _INT64_MAX)  # INT64_MAX marks a free slot (never expires)
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
        extend("_hole", (2,), np.bool_, False)  # TCP direction in hole mode (see _FlowBuffers)
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
        self._code[slots] = _OPEN
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

    # --- public API ---------------------------------------------------------------------------

    @property
    def open_flows(self) -> int:
        """Number of flows currently open (memory is proportional to it)."""
        return len(self._open)

    def add(self, batch: PacketBatch) -> list[dict[str, Any]]:
        """Assemble one batch; return the flows that ended during it, as dicts."""
        return self._records(self._finish(*self._advance(batch)))

    def flush(self) -> list[dict[str, Any]]:
        """End every open flow (``end_of_capture`` unless closed by FIN/RST) and return them."""
        return self._records(self._finish(*self._end_all()))

    def add_columns(self, batch: PacketBatch) -> pa.RecordBatch:
        """Like :meth:`add`, as an Arrow record batch of :data:`FLOW_SCHEMA` (no per-flow dicts)."""
        return self._record_batch(self._finish(*self._advance(batch)))

    def flush_columns(self) -> pa.RecordBatch:
        """Like :meth:`flush`, as an Arrow record batch of :data:`FLOW_SCHEMA`."""
        return self._record_batch(self._finish(*self._end_all()))

    def flush_column_batches(self, max_flows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
        """Like :meth:`flush_columns`, the same rows in several record batches of at most
        ``max_flows`` flows and about ``max_bytes`` payload bytes (a flow larger than that alone).

        At the end of a capture most flows may still be open: building all their columns at
        once would hold a second copy of every buffer (and fault in that much fresh memory);
        slices are built one at a time, each freeing its flows' buffers.
        """
        slots, codes = self._end_all()
        order = self._output_order(slots)
        slots, codes = slots[order], codes[order]
        # Bytes each flow will emit: the contiguous stream prefixes and the interleaved payload.
        emitted = np.cumsum(self._end[slots].sum(axis=1) + self._paylen[slots])
        start = 0
        while start < len(slots):
            before = int(emitted[start - 1]) if start else 0
            stop = min(start + max_flows, int(np.searchsorted(emitted, before + max_bytes, side="right")))
            stop = max(stop, start + 1)
            yield self._record_batch(self._finish(slots[start:stop], codes[start:stop]))
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
            ended_codes = np.concatenate([ended_codes, np.full(len(expired), _IDLE, np.int8)])
        return ended_slots, ended_codes

    def _end_all(self) -> tuple[np.ndarray, np.ndarray]:
        slots = np.array(list(self._open.values()), np.int64)
        self._open.clear()
        return slots, np.full(len(slots), _EOC, np.int8)

    # --- per-batch assembly -------------------------------------------------------------------

    def _group(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Canonical keys: (order grouping packets by key, stable; group starts in that order;
        canonical direction per packet; key words (n, 5) uint64)."""
        src = np.ascontiguousarray(batch.src_addr).view(">u8").astype(np.uint64)
        dst = np.ascontiguousarray(batch.dst_addr).view(">u8").astype(np.uint64)
        sport = batch.src_port.astype(np.uint64)
        dport = batch.dst_port.astype(np.uint64)
        s_hi, s_lo, d_hi, d_lo = src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]
        src_first = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sport <= dport))))
        direction = (~src_first).view(np.uint8)
        words = np.empty((len(batch), 5), np.uint64)
        words[:, 0] = np.where(src_first, s_hi, d_hi)
        words[:, 1] = np.where(src_first, s_lo, d_lo)
        words[:, 2] = np.where(src_first, d_hi, s_hi)
        words[:, 3] = np.where(src_first, d_lo, s_lo)
        port_a = np.where(src_first, sport, dport)
        port_b = np.where(src_first, dport, sport)
        words[:, 4] = ((batch.vlan_id.astype(np.uint64) << np.uint64(48))
                       | (batch.ip_version.astype(np.uint64) << np.uint64(40))
                       | (batch.protocol.astype(np.uint64) << np.uint64(32))
                       | (port_a << np.uint64(16)) | port_b)
        # Multiply-add of the words with odd constants, then one finaliser: collisions are
        # checked exactly below, so the hash only needs to spread keys well.
        h = words[:, 0] * np.uint64(0x9E3779B97F4A7C15)
        for k, multiplier in enumerate((0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                                        0xFF51AFD7ED558CCD), start=1):
            h += words[:, k] * np.uint64(multiplier)
        h = _mix64(h)
        # One plain sort of (hash, position) keys: the low bits hold the packet's position, so
        # packets of a key stay in capture order (cheaper than a stable argsort).
        n = len(batch)
        bits = max(1, (n - 1).bit_length())
        mask = np.uint64((1 << bits) - 1)
        sort_keys = (h & ~mask) | np.arange(n, dtype=np.uint64)
        sort_keys.sort()
        order = (sort_keys & mask).astype(np.int64)
        hs = sort_keys >> np.uint64(bits)
        same = hs[1:] == hs[:-1]
        as_void = np.dtype((np.void, 40))
        sorted_words = np.take(words, order, axis=0)
        sorted_void = sorted_words.view(as_void).ravel()
        collided = same & (sorted_void[1:] != sorted_void[:-1])
        if collided.any():
            self.stats["hash_collision_batches"] += 1
            order = np.lexsort(tuple(words[:, k] for k in range(4, -1, -1)))
            sorted_words = np.take(words, order, axis=0)
            sorted_void = sorted_words.view(as_void).ravel()
            same = sorted_void[1:] == sorted_void[:-1]
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        return order, starts, direction[order], sorted_words

    def _assemble(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        idle, active = self._idle_ns, self._active_ns
        order, gstart, dc, sorted_words = self._group(batch)
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
            split = gap_idle | (syn[gstart[ci]] & (self._code[cs] != _OPEN)) | (t0 - self._first_ts[cs] > active)
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
            g_closed[cont_idx] = self._code[cs] != _OPEN
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
            bufs[slot] = _FlowBuffers()

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
        newly = (code == _OPEN) & ((f_rst != _NEVER) | (f_both != _NEVER))
        code[newly] = np.where(f_rst[newly] <= f_both[newly], _RST, _FIN)
        self._code[slots] = code
        self._fin[slots, 0] |= f0 != _NEVER
        self._fin[slots, 1] |= f1 != _NEVER

        if self._max_packets:
            self._collect_lists(slots, seg_start, seg_id, ts, dc, fl, plen, ipb)
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
            self._collect_payload(batch, order, slots, seg_id, dc, syn_flag, plen, seg_tcp)

        # Open flows: the last segment of each group.
        for g, slot in zip(seg_gid[last_of_group].tolist(), slots[last_of_group].tolist()):
            self._open[keys[g]] = slot

        # Ended flows: carried flows split at their group's start, and segments followed by
        # another one of the same tuple; the reason is closure, else what caused the split.
        old = np.flatnonzero(ended_at_start)
        old_slots = slot_in[old]
        old_codes = np.where(start_idle[old], _IDLE, _ACTIVE).astype(np.int8)
        mid = np.flatnonzero(~last_of_group)
        nxt = seg_start[mid + 1]
        mid_codes = np.where(cause_active[nxt], _ACTIVE, _IDLE).astype(np.int8)
        ended = np.concatenate([old_slots, slots[mid]])
        self._prev_ts[ended] = _INT64_MAX  # ended here: keep them out of this batch's expiry
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

    def _collect_lists(self, slots, seg_start, seg_id, ts, dc, fl, plen, ipb) -> None:
        """Append the packets of flows that hold fewer than ``max_packets`` to their lists."""
        room = self._max_packets - self._listed[slots]
        seg_len = np.diff(np.append(seg_start, len(ts)))
        take = np.minimum(seg_len, np.maximum(room, 0))
        segs = np.flatnonzero(take > 0)
        if not len(segs):
            return
        rank = np.arange(len(ts)) - seg_start[seg_id]
        need = rank < take[seg_id]
        # Raw little columns; each flow copies its slice without creating Python objects.
        times_ms = memoryview(((ts[need] - self._first_ts[slots[seg_id[need]]]) / 1e6).tobytes())
        d = memoryview(dc[need].tobytes())
        f = memoryview(fl[need].tobytes())
        p = memoryview(plen[need].astype(np.int32).tobytes())
        b = memoryview(ipb[need].astype(np.int32).tobytes())
        self._listed[slots] += take
        ends = np.cumsum(take[segs]).tolist()
        bufs = self._bufs
        lo = 0
        for slot, hi in zip(slots[segs].tolist(), ends):
            buf = bufs[slot]
            buf.times.frombytes(times_ms[8 * lo : 8 * hi])
            buf.dirs += d[lo:hi]
            buf.plens.frombytes(p[4 * lo : 4 * hi])
            buf.ipbytes.frombytes(b[4 * lo : 4 * hi])
            buf.flags += f[lo:hi]
            lo = hi

    def _collect_payload(self, batch, order, slots, seg_id, dc, syn_flag, plen, seg_tcp) -> None:
        """Extend the per-direction streams and the interleaved payload's runs with this batch.

        Vectorised for the common case: UDP, and TCP directions whose segments all start within
        the bytes already contiguous (in order, retransmitted, overlapping). A flow segment with
        any segment beyond its direction's contiguous end (a hole), or already in hole mode, is
        replayed packet by packet in :meth:`_payload_by_packet`.
        """
        max_bytes = self._max_bytes
        seg_slot = slots[seg_id]
        # Packets that may still add bytes (or fix an initial sequence number via a SYN).
        idx = np.flatnonzero(((plen > 0) | syn_flag) & ~self._done[seg_slot, dc])
        m = len(idx)
        if not m:
            return
        packet = order[idx]
        e_seg = seg_id[idx]
        e_slot = seg_slot[idx]
        e_dir = dc[idx]
        e_len = plen[idx]
        e_tcp = seg_tcp[e_seg]
        e_off = batch.payload_offset[packet].astype(np.int64)
        e_dseq = (batch.tcp_seq[packet].astype(np.int64) + syn_flag[idx]) & 0xFFFFFFFF  # data follows a SYN
        piece_src = np.zeros(m, np.int64)
        piece_len = np.zeros(m, np.int64)
        replay = np.zeros(len(slots), bool)  # flow segments handled packet by packet
        per_dir = []
        for d in (0, 1):
            sel = np.flatnonzero(e_dir == d)
            if not len(sel):
                continue
            seg = e_seg[sel]
            first = np.concatenate([[True], seg[1:] != seg[:-1]])
            gstarts = np.flatnonzero(first)
            grp = np.cumsum(first) - 1
            gslot = e_slot[sel][gstarts]
            gtcp = e_tcp[sel][gstarts]
            e0 = self._end[gslot, d]
            ln = e_len[sel]
            off = e_off[sel]
            # UDP: datagrams appended in arrival order up to max_bytes.
            c = np.cumsum(ln) - ln
            udp_prev = e0[grp] + c - c[gstarts][grp]
            udp_len = np.clip(max_bytes - udp_prev, 0, ln)
            # TCP: offsets from the initial sequence number (the first SYN/data seen), mod 2**32.
            base0 = self._base[gslot, d]
            base = np.where(base0 >= 0, base0, e_dseq[sel][gstarts])
            rel = (e_dseq[sel] - base[grp]) & 0xFFFFFFFF
            rel = np.where(rel >= 0x80000000, rel - 0x100000000, rel)
            lo = np.maximum(rel, 0)
            hi = np.minimum(rel + ln, max_bytes)
            valid = lo < hi
            hiv = np.where(valid, hi, 0)
            shift = grp * (max_bytes + 1)  # keeps the running maximum inside each group
            running = np.maximum.accumulate(hiv + shift) - shift
            before = np.zeros(len(sel), np.int64)
            before[1:] = running[:-1]
            before[gstarts] = 0
            prev_end = np.maximum(e0[grp], before)
            beyond = np.bincount(grp, weights=valid & (lo > prev_end), minlength=len(gstarts)) > 0
            bad = gtcp & (beyond | self._hole[gslot, d])
            replay[seg[gstarts][bad]] = True
            tcp_len = np.where(valid, np.maximum(hi - prev_end, 0), 0)
            tcp = gtcp[grp]
            piece_len[sel] = np.where(tcp, tcp_len, udp_len)
            piece_src[sel] = np.where(tcp, off + prev_end - rel, off)
            has_data = ln > 0
            retrans = tcp & has_data & np.where(valid, hi <= prev_end, rel + ln <= prev_end)
            overlap = tcp & valid & (lo < prev_end) & (hi > prev_end)
            new_end = np.where(gtcp, np.maximum(e0, np.maximum.reduceat(hiv, gstarts)),
                               np.minimum(e0 + np.add.reduceat(ln, gstarts), max_bytes))
            per_dir.append((d, sel, grp, gstarts, gslot, gtcp, base, new_end, retrans, overlap))

        keep = ~replay[e_seg]
        piece_len[~keep] = 0
        data = batch.data
        bufs = self._bufs
        for d, sel, grp, gstarts, gslot, gtcp, base, new_end, retrans, overlap in per_dir:
            ok_entry = keep[sel]
            ok = ok_entry[gstarts]
            self.stats["retransmitted_segments"] += int(np.count_nonzero(retrans & ok_entry))
            self.stats["overlapping_segments"] += int(np.count_nonzero(overlap & ok_entry))
            g_ok = np.flatnonzero(ok)
            self._end[gslot[g_ok], d] = new_end[g_ok]
            tcp_ok = g_ok[gtcp[g_ok]]
            self._base[gslot[tcp_ok], d] = base[tcp_ok]
            self._done[gslot[g_ok], d] = new_end[g_ok] >= max_bytes
            # Stream bytes: one gather per direction, one append per (flow, direction).
            lens = piece_len[sel]
            gathered, totals = _gather(data, piece_src[sel], lens, grp, len(gstarts))
            if gathered:
                pos = 0
                for slot, total in zip(gslot.tolist(), totals.tolist()):
                    if total:
                        bufs[slot].streams[d].extend(gathered[pos : pos + total])
                        pos += total

        # Interleaved payload, in arrival order within each flow, capped at max_bytes.
        first = np.concatenate([[True], e_seg[1:] != e_seg[:-1]])
        gstarts = np.flatnonzero(first)
        grp = np.cumsum(first) - 1
        gslot = e_slot[gstarts]
        room = max_bytes - self._paylen[gslot]
        c = np.cumsum(piece_len) - piece_len
        taken_before = c - c[gstarts][grp]
        take = np.clip(room[grp] - taken_before, 0, piece_len)
        self._paylen[gslot] += np.bincount(grp, weights=take, minlength=len(gstarts)).astype(np.int64)
        # Runs: consecutive pieces of one flow and direction (see _FlowBuffers).
        taken = np.flatnonzero(take)
        if len(taken):
            t_grp, t_dir = grp[taken], e_dir[taken]
            run_start = np.flatnonzero(np.concatenate([[True], (t_grp[1:] != t_grp[:-1])
                                                       | (t_dir[1:] != t_dir[:-1])]))
            run_len = np.add.reduceat(take[taken], run_start)
            runs = memoryview(((run_len << 1) | t_dir[run_start]).astype(np.int64).tobytes())
            run_grp = t_grp[run_start]
            has_runs = np.flatnonzero(np.bincount(run_grp, minlength=len(gstarts)))
            ends = np.searchsorted(run_grp, has_runs, side="right").tolist()
            lo = 0
            for slot, hi in zip(gslot[has_runs].tolist(), ends):
                bufs[slot].runs.frombytes(runs[8 * lo : 8 * hi])
                lo = hi

        if replay.any():
            self._payload_by_packet(batch, np.flatnonzero(~keep), e_slot, e_dir, e_len, e_off, e_dseq,
                                    syn_flag[idx])

    def _payload_by_packet(self, batch, entries, e_slot, e_dir, e_len, e_off, e_dseq, e_syn) -> None:
        """Packet-by-packet TCP reassembly (holes, out-of-order segments) of the given entries."""
        max_bytes = self._max_bytes
        data = memoryview(batch.data)
        bufs = self._bufs
        stats = self.stats
        state: dict[tuple[int, int], list[int]] = {}  # (slot, dir) -> [base, end]
        paylen: dict[int, int] = {}  # slot -> length of the interleaved payload

        def to_payload(slot: int, buf: _FlowBuffers, d: int, length: int) -> None:
            """The next ``length`` contiguous bytes of direction ``d`` join the payload (capped)."""
            taken = paylen[slot] if slot in paylen else int(self._paylen[slot])
            if taken < max_bytes:
                buf.add_run(d, min(length, max_bytes - taken))
                paylen[slot] = min(taken + length, max_bytes)

        for slot, d, length, off, seq, is_syn in zip(
            e_slot[entries].tolist(), e_dir[entries].tolist(), e_len[entries].tolist(),
            e_off[entries].tolist(), e_dseq[entries].tolist(), e_syn[entries].tolist(),
        ):
            st = state.get((slot, d))
            if st is None:
                st = state[(slot, d)] = [int(self._base[slot, d]), int(self._end[slot, d])]
            base, end = st
            if end >= max_bytes:
                continue
            if base < 0:
                if not (is_syn or length):
                    continue
                base = st[0] = seq
            if not length:
                continue
            buf = bufs[slot]
            stream = buf.streams[d]
            have = buf.holes[d] if buf.holes is not None else None
            rel = (seq - base) & 0xFFFFFFFF
            if rel >= 0x80000000:
                rel -= 0x100000000
            lo = rel if rel > 0 else 0
            hi = min(rel + length, max_bytes)
            if lo >= hi:  # entirely before the initial seq, or beyond the kept window
                if rel + length <= end:
                    stats["retransmitted_segments"] += 1
                continue
            if have is None:
                if lo <= end:  # in order: append what is new
                    if hi <= end:
                        stats["retransmitted_segments"] += 1
                        continue
                    if lo < end:
                        stats["overlapping_segments"] += 1
                    stream += data[off + end - rel : off + hi - rel]
                    st[1] = hi
                    to_payload(slot, buf, d, hi - end)
                    continue
                have = buf.to_hole_mode(d, max_bytes, end)
            if lo > end:
                stats["out_of_order_segments"] += 1
            if have.find(1, lo, hi) == -1:
                stream[lo:hi] = data[off + lo - rel : off + hi - rel]
                have[lo:hi] = b"\x01" * (hi - lo)
            else:  # first-seen bytes win: write only the runs not received yet
                new_bytes = False
                i = lo
                while i < hi:
                    z = have.find(0, i, hi)
                    if z == -1:
                        break
                    o = have.find(1, z, hi)
                    if o == -1:
                        o = hi
                    stream[z:o] = data[off + z - rel : off + o - rel]
                    have[z:o] = b"\x01" * (o - z)
                    new_bytes = True
                    i = o
                stats["overlapping_segments" if new_bytes else "retransmitted_segments"] += 1
            if lo <= end:
                new_end = have.find(0, end)
                if new_end == -1:
                    new_end = max_bytes
                st[1] = new_end
                to_payload(slot, buf, d, new_end - end)
        for (slot, d), (base, end) in state.items():
            self._base[slot, d] = base
            self._end[slot, d] = end
            self._done[slot, d] = end >= max_bytes
            self._hole[slot, d] = bufs[slot].holes is not None and bufs[slot].holes[d] is not None
        for slot, taken in paylen.items():
            self._paylen[slot] = taken

    # --- emission -----------------------------------------------------------------------------

    def _output_order(self, slots: np.ndarray) -> np.ndarray:
        """The order flows are emitted in: (first_seen_ns, frame index of the first packet, tuple)."""
        words = self._words[slots]
        return np.lexsort((words[:, 4], words[:, 3], words[:, 2], words[:, 1], words[:, 0],
                           self._first_frame[slots], self._first_ts[slots]))

    def _finish(self, slots: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
        """Columns of the flows in ``slots``, in output order; frees the slots.

        Numeric columns are numpy arrays, the others lists with one entry per flow; the payload
        and ``packet_*`` entries are each flow's own buffers (``bytearray``/``array``/``bytes``;
        directions already src/dst), copied once when a column is built.
        """
        slots = slots.astype(np.int64)
        closure = self._code[slots]
        codes = np.where(closure != _OPEN, closure, codes)
        order = self._output_order(slots)
        slots, codes = slots[order], codes[order]
        words = self._words[slots]
        # Map canonical (A, B) to (src, dst) by the initiator's side.
        init = np.where(self._syn_dir[slots] >= 0, self._syn_dir[slots], self._first_dir[slots]).astype(np.int64)
        rows = np.arange(len(slots))
        w4 = words[:, 4]
        port_a = ((w4 >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16)
        port_b = (w4 & np.uint64(0xFFFF)).astype(np.uint16)
        swap = init == 1
        first, last = self._first_ts[slots], self._max_ts[slots]
        cols: dict[str, Any] = {
            "src_port": np.where(swap, port_b, port_a),
            "dst_port": np.where(swap, port_a, port_b),
            "protocol": ((w4 >> np.uint64(32)) & np.uint64(0xFF)).astype(np.uint8),
            "ip_version": ((w4 >> np.uint64(40)) & np.uint64(0xFF)).astype(np.uint8),
            "vlan_id": (w4 >> np.uint64(48)).astype(np.uint16),
            "first_seen_ns": first,
            "last_seen_ns": last,
            "duration_ms": (last - first) / 1e6,
        }
        for name, counts in (("packets", self._pkts[slots]), ("bytes", self._bytes[slots]),
                             ("payload_bytes", self._pbytes[slots]), ("missed_bytes", self._gaps.missed(slots))):
            cols[f"src2dst_{name}"] = counts[rows, init]
            cols[f"dst2src_{name}"] = counts[rows, 1 - init]
        cols["bidirectional_packets"] = cols["src2dst_packets"] + cols["dst2src_packets"]
        cols["bidirectional_bytes"] = cols["src2dst_bytes"] + cols["dst2src_bytes"]
        cols["end_reason"] = [END_REASONS[c] for c in codes.tolist()]

        # Per-flow Python work, one comprehension per column: Community ID and address text from
        # packed addresses, the buffers handed over as they are (joined once per column below).
        addr_a = np.ascontiguousarray(words[:, 0:2].astype(">u8")).view(np.uint8)
        addr_b = np.ascontiguousarray(words[:, 2:4].astype(">u8")).view(np.uint8)
        cols["community_id"] = community_ids(addr_a, addr_b, port_a, port_b, cols["protocol"])
        src_addr = np.where(swap[:, None], addr_b, addr_a)
        dst_addr = np.where(swap[:, None], addr_a, addr_b)
        ipver = cols["ip_version"].tolist()
        cols["src_ip"] = list(map(_address_text, src_addr.view(np.dtype((np.void, 16))).ravel().tolist(), ipver))
        cols["dst_ip"] = list(map(_address_text, dst_addr.view(np.dtype((np.void, 16))).ravel().tolist(), ipver))

        slot_list = slots.tolist()
        bufs = self._bufs
        flows = [bufs[slot] for slot in slot_list]
        for slot in slot_list:
            bufs[slot] = None
            self._keys[slot] = None
        streams = [buf.streams for buf in flows]
        flip = swap.tolist()
        no_holes = array(_INT32_CODE)
        holes = [(no_holes, no_holes)] * len(flows)
        payload = [None] * len(flows)
        holed = [i for i, buf in enumerate(flows) if buf.holes is not None]
        if holed:  # hole mode: a max_bytes buffer of which the first _end bytes are contiguous
            ends = self._end[slots].tolist()
            skip = self.options.on_hole == "skip"
            for i in holed:
                (s0, holes0), (s1, holes1) = (flows[i].stream_bytes(0, ends[i][0], skip),
                                              flows[i].stream_bytes(1, ends[i][1], skip))
                if holes0 or holes1:
                    self.stats["flows_with_payload_hole"] += 1
                    if skip:  # bytes after the holes join the interleaved payload at its end
                        after = tuple(d for d in ((1, 0) if flip[i] else (0, 1)) if (holes0, holes1)[d])
                        payload[i] = flows[i].payload((s0, s1), after, self._max_bytes)
                streams[i] = (s0, s1)
                holes[i] = (array(_INT32_CODE, holes0), array(_INT32_CODE, holes1))
        s2d = [pair[f] for pair, f in zip(streams, flip)]
        cols["src2dst_payload"] = s2d
        cols["dst2src_payload"] = [pair[not f] for pair, f in zip(streams, flip)]
        cols["src2dst_payload_holes"] = [pair[f] for pair, f in zip(holes, flip)]
        cols["dst2src_payload_holes"] = [pair[not f] for pair, f in zip(holes, flip)]
        cols["payload"] = [buf.payload(pair) if done is None else done
                           for buf, pair, done in zip(flows, streams, payload)]
        cols["packet_time_ms"] = [buf.times for buf in flows]
        cols["packet_direction"] = [buf.dirs.translate(_SWAP_DIRECTION) if f else buf.dirs
                                    for buf, f in zip(flows, flip)]
        cols["packet_payload_bytes"] = [buf.plens for buf in flows]
        cols["packet_ip_bytes"] = [buf.ipbytes for buf in flows]
        cols["packet_tcp_flags"] = [buf.flags for buf in flows]
        # The initiator's stream holds a ClientHello only if it starts with a handshake record.
        tcp = (cols["protocol"] == PROTO_TCP).tolist()
        hellos = [client_hello_metadata(data) if is_tcp and data[:1] == b"\x16" else None
                  for data, is_tcp in zip(s2d, tcp)]
        for k, name in enumerate(("tls_sni", "tls_version", "tls_ja3", "tls_ja3_hash")):
            cols[name] = [None if hello is None else hello[k] for hello in hellos]
        self._prev_ts[slots] = _INT64_MAX
        self._free.extend(slot_list)
        return cols

    @staticmethod
    def _records(cols: dict[str, Any]) -> list[dict[str, Any]]:
        """Flow dicts (Python values, lists) from :meth:`_finish` columns."""
        if not len(cols["end_reason"]):
            return []
        values = dict(cols)
        for name, value in cols.items():
            if isinstance(value, np.ndarray):
                values[name] = value.tolist()
        for name in ("packet_time_ms", "packet_payload_bytes", "packet_ip_bytes", "src2dst_payload_holes",
                     "dst2src_payload_holes"):
            values[name] = [a.tolist() for a in cols[name]]
        for name in ("packet_direction", "packet_tcp_flags"):
            values[name] = [list(a) for a in cols[name]]
        for name in ("payload", "src2dst_payload", "dst2src_payload"):
            values[name] = [bytes(a) for a in cols[name]]
        return [dict(zip(FLOW_COLUMNS, row)) for row in zip(*(values[c] for c in FLOW_COLUMNS))]

    @staticmethod
    def _record_batch(cols: dict[str, Any]) -> pa.RecordBatch:
        """An Arrow record batch of :data:`FLOW_SCHEMA` from :meth:`_finish` columns."""
        arrays = []
        for field in FLOW_SCHEMA_FIELDS:
            value = cols[field.name]
            if pa.types.is_list(field.type) or pa.types.is_binary(field.type):
                # One join of the flows' buffers and their offsets: no bytes object per flow.
                offsets = np.zeros(len(value) + 1, np.int64)
                np.cumsum(np.fromiter(map(len, value), np.int64, len(value)), out=offsets[1:])
                data = b"".join(value)
                if pa.types.is_binary(field.type):
                    if offsets[-1] > _INT32_MAX:  # the offsets below would wrap around
                        raise ValueError(f"{field.name}: {offsets[-1]:,} bytes in one batch of flows, more "
                                         f"than a binary column holds (2 GiB); lower max_bytes")
                    arrays.append(pa.Array.from_buffers(field.type, len(value), [
                        None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]))
                else:
                    value_type = field.type.value_type
                    flat = np.frombuffer(data, dtype=value_type.to_pandas_dtype())
                    arrays.append(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                           pa.array(flat, type=value_type)))
            else:
                arrays.append(pa.array(value, type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


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
        flushed = assembler.flush_column_batches(flush_flows or _INT64_MAX, flush_bytes or _INT64_MAX)
    yield from (ended for ended in flushed if ended.num_rows)
    log.debug("flow assembly: %s", dict(assembler.stats))
