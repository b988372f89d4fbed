"""Emission: the flows in some slots of the assembler -> columns of the flows table.

:func:`finish_flows` builds the columns of finished flows in output order (``first_seen_ns``,
frame index of the first packet, tuple) and frees their slots: the canonical endpoints mapped to
``src``/``dst`` by the initiator, address text, Community ID, the payload cut from the flows'
buffers (holes per ``on_hole``), TLS ClientHello metadata. :func:`to_records` turns the columns
into flow dicts, :func:`to_record_batch` into an Arrow record batch of
:data:`~pcapvision.ingest.flowschema.FLOW_SCHEMA`.
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from pcapvision.ingest.arrays import numeric_array, string_array
from pcapvision.ingest.community_id import community_ids
from pcapvision.ingest.flowbuffers import (
    LIST_PAGE,
    RUN_PAGE,
    find_mask,
    read_bytes,
    release_list,
    release_runs,
    release_table,
)
from pcapvision.ingest.flowschema import END_OPEN, END_REASONS, FLOW_COLUMNS, FLOW_SCHEMA, FLOW_SCHEMA_FIELDS
from pcapvision.ingest.flowtable import (
    F_BYTES,
    F_CODE,
    F_END,
    F_FIRST_DIR,
    F_FIRST_FRAME,
    F_FIRST_TS,
    F_HOLE,
    F_LIST_HEAD,
    F_LISTED,
    F_MAX_TS,
    F_PAYLEN,
    F_PAYLOAD_BYTES,
    F_PKTS,
    F_PREV_TS,
    F_RUN_COUNT,
    F_RUN_HEAD,
    F_SYN_DIR,
    INT64_MAX,
    T_MASK,
    T_STREAM,
)
from pcapvision.ingest.jit import compiled, compiled_inline, copy_bytes
from pcapvision.ingest.seqgaps import missed_bytes, release_gaps
from pcapvision.ingest.packets import PROTO_TCP, format_address
from pcapvision.ingest.tls import client_hello_metadata_many

if TYPE_CHECKING:
    from pcapvision.ingest.assembler import FlowAssembler

__all__ = ["finish_flows", "output_order", "to_record_batch", "to_records"]

_INT32_MAX = np.iinfo(np.int32).max


def _address_text(packed: bytes, ip_version: int) -> str:
    if ip_version == 4:  # inet_ntop prints IPv4 exactly as format_address does, only faster
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return _ipv6_text(packed)


@functools.lru_cache(maxsize=1 << 14)
def _ipv6_text(packed: bytes) -> str:
    return format_address(packed, 6)


def output_order(asm: FlowAssembler, slots: np.ndarray) -> np.ndarray:
    """The order flows are emitted in: (first_seen_ns, frame index of the first packet, tuple)."""
    words = asm.slots.words[slots]
    state = asm.slots.state
    return np.lexsort((words[:, 4], words[:, 3], words[:, 2], words[:, 1], words[:, 0],
                       state[slots, F_FIRST_FRAME], state[slots, F_FIRST_TS]))


def finish_flows(asm: FlowAssembler, slots: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Columns of the flows in ``slots``, in output order; frees the slots.

    Numeric columns are numpy arrays, the payload and ``packet_*`` columns Arrow arrays (built
    by one compiled pass that copies every flow's pages into the column buffers), the others
    lists with one entry per flow.
    """
    S, P = asm.slots, asm.pools
    state = S.state
    slots = slots.astype(np.int64)
    closure = state[slots, F_CODE].astype(np.int8)
    codes = np.where(closure != END_OPEN, closure, codes)
    order = output_order(asm, slots)
    slots, codes = slots[order], codes[order]
    n = len(slots)
    words = S.words[slots]
    # Map canonical (A, B) to (src, dst) by the initiator's side.
    syn_dir = state[slots, F_SYN_DIR]
    init = np.where(syn_dir >= 0, syn_dir, state[slots, F_FIRST_DIR])
    rows = np.arange(n)
    w4 = words[:, 4]
    port_a = ((w4 >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16)
    port_b = (w4 & np.uint64(0xFFFF)).astype(np.uint16)
    swap = init == 1
    first, last = state[slots, F_FIRST_TS], state[slots, F_MAX_TS]
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

    # Sizes of every flow's outputs, then one pass copying its pages into the column buffers.
    skip = asm.options.on_hole == "skip"
    sizes = np.zeros((n, _SIZES), np.int64)
    _measure(slots, init, S, P, skip, asm.options.max_bytes, sizes)
    offsets = np.zeros((_SIZES, n + 1), np.int64)
    np.cumsum(sizes.T, axis=1, out=offsets[:, 1:])
    for k, name in enumerate(_BINARY):
        if offsets[k, -1] > _INT32_MAX:  # the int32 offsets of an Arrow binary column would wrap
            raise ValueError(f"{name}: {offsets[k, -1]:,} bytes in one batch of flows, more than a binary "
                             f"column holds (2 GiB); lower max_bytes")
    out = _Outputs(*(np.empty(offsets[k, -1], dtype) for k, dtype in enumerate(_DTYPES)))
    missed = np.zeros((n, 2), np.int64)
    _fill(slots, init, S, P, skip, asm.options.max_bytes, offsets, out, missed)
    _release(slots, S, P)

    for name, field in (("packets", F_PKTS), ("bytes", F_BYTES), ("payload_bytes", F_PAYLOAD_BYTES)):
        counts = state[slots, field : field + 2]
        cols[f"src2dst_{name}"] = counts[rows, init]
        cols[f"dst2src_{name}"] = counts[rows, 1 - init]
    cols["src2dst_missed_bytes"] = missed[rows, init]
    cols["dst2src_missed_bytes"] = missed[rows, 1 - init]
    cols["bidirectional_packets"] = cols["src2dst_packets"] + cols["dst2src_packets"]
    cols["bidirectional_bytes"] = cols["src2dst_bytes"] + cols["dst2src_bytes"]
    cols["end_reason"] = [END_REASONS[c] for c in codes.tolist()]
    for k, (name, arrow_type) in enumerate(zip(_COLUMNS, _ARROW_TYPES)):
        values = getattr(out, _OUTPUT_FIELDS[k])
        if arrow_type == pa.binary():
            cols[name] = pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(offsets[k].astype(np.int32)),
                                                               pa.py_buffer(values)])
        else:
            cols[name] = pa.ListArray.from_arrays(numeric_array(offsets[k], pa.int32()),
                                                  numeric_array(values, arrow_type.value_type))
    holed = (sizes[:, _HOLES_S2D] > 0) | (sizes[:, _HOLES_D2S] > 0)
    asm.stats["flows_with_payload_hole"] += int(np.count_nonzero(holed))

    # Per-flow Python work: Community ID and address text from packed addresses, TLS metadata.
    addr_a = np.ascontiguousarray(words[:, 0:2].astype(">u8")).view(np.uint8)
    addr_b = np.ascontiguousarray(words[:, 2:4].astype(">u8")).view(np.uint8)
    cols["community_id"] = community_ids(addr_a, addr_b, port_a, port_b, cols["protocol"])
    src_addr = np.where(swap[:, None], addr_b, addr_a)
    dst_addr = np.where(swap[:, None], addr_a, addr_b)
    ipver = cols["ip_version"].tolist()
    cols["src_ip"] = list(map(_address_text, src_addr.view(np.dtype((np.void, 16))).ravel().tolist(), ipver))
    cols["dst_ip"] = list(map(_address_text, dst_addr.view(np.dtype((np.void, 16))).ravel().tolist(), ipver))
    # The initiator's stream holds a ClientHello only if it starts with a handshake record.
    s2d, s2d_at = out.s2d, offsets[_S2D]
    hello_rows = np.flatnonzero((cols["protocol"] == PROTO_TCP) & (sizes[:, _S2D] > 0))
    hello_rows = hello_rows[s2d[s2d_at[hello_rows]] == 0x16]
    hellos: list[tuple | None] = [None] * n
    found = client_hello_metadata_many(s2d, s2d_at[hello_rows], s2d_at[hello_rows + 1])
    for i, hello in zip(hello_rows.tolist(), found):
        hellos[i] = hello
    for k, name in enumerate(("tls_sni", "tls_version", "tls_ja3", "tls_ja3_hash")):
        cols[name] = [None if hello is None else hello[k] for hello in hellos]
    return cols


# Output columns built by the compiled pass, in the order of the sizes/offsets rows.
_COLUMNS = ("src2dst_payload", "dst2src_payload", "payload", "src2dst_payload_holes", "dst2src_payload_holes",
            "packet_time_ms", "packet_direction", "packet_payload_bytes", "packet_ip_bytes", "packet_tcp_flags")
_OUTPUT_FIELDS = ("s2d", "d2s", "payload", "holes_s2d", "holes_d2s", "times", "dirs", "plens", "ipbytes", "flags")
_S2D, _D2S, _PAYLOAD, _HOLES_S2D, _HOLES_D2S, _LISTED = 0, 1, 2, 3, 4, 5
_SIZES = len(_COLUMNS)
_BINARY = _COLUMNS[:3]
_ARROW_TYPES = tuple(FLOW_SCHEMA.field(name).type for name in _COLUMNS)
_DTYPES = (np.uint8, np.uint8, np.uint8, np.int32, np.int32, np.float64, np.uint8, np.int32, np.int32, np.uint8)


class _Outputs(NamedTuple):
    s2d: np.ndarray
    d2s: np.ndarray
    payload: np.ndarray
    holes_s2d: np.ndarray
    holes_d2s: np.ndarray
    times: np.ndarray
    dirs: np.ndarray
    plens: np.ndarray
    ipbytes: np.ndarray
    flags: np.ndarray


@compiled_inline
def _received_run(pages, mask, start, max_bytes):  # pragma: no cover - compiled
    """[z, o): the next run of received bytes at or after ``start`` in a hole mask (z = -1: none)."""
    z = find_mask(pages, mask, 1, start, max_bytes)
    if z == -1:
        return -1, -1
    o = find_mask(pages, mask, 0, z, max_bytes)
    return z, (max_bytes if o == -1 else o)


@compiled_inline
def _stream_size(state, tables, pages, s, d, skip, max_bytes):  # pragma: no cover - compiled
    """(bytes, holes) a direction emits: its contiguous prefix, and [its length] as the one hole
    when bytes after a hole are stranded; with ``skip``, every received byte (holes closed) and
    the offset of each join."""
    end = state[s, F_END + d]
    if not state[s, F_HOLE + d]:
        return end, 0
    mask = tables[s, T_MASK + d]
    if not skip:
        return end, (1 if find_mask(pages, mask, 1, end, max_bytes) != -1 else 0)
    total = 0
    joins = 0
    j = 0
    z, o = _received_run(pages, mask, 0, max_bytes)
    while z != -1:
        if z > j:  # a gap before this run (also at offset 0)
            joins += 1
        total += o - z
        j = o
        z, o = _received_run(pages, mask, o, max_bytes)
    return total, joins


@compiled_inline
def _taken_by_runs(runs, run_next, state, s):  # pragma: no cover - compiled
    """Bytes of each direction in flow ``s``'s interleaved payload."""
    taken = np.zeros(2, np.int64)
    page = state[s, F_RUN_HEAD]
    for r in range(state[s, F_RUN_COUNT]):
        page, run = _run_at(runs, run_next, page, r)
        taken[run & 1] += run >> 1
    return taken


@compiled_inline
def _run_at(runs, run_next, page, r):  # pragma: no cover - compiled
    """(page, run) of run ``r`` of a flow's chain, ``page`` holding run ``r - 1`` (or the head)."""
    if r and r % RUN_PAGE == 0:
        page = run_next[page]
    return page, runs[page, r % RUN_PAGE]


@compiled
def _measure(slots, init, S, P, skip, max_bytes, sizes):  # pragma: no cover - compiled
    state, tables, pages, runs, run_next = S.state, S.tables, P.pages, P.runs, P.run_next
    for i in range(slots.shape[0]):
        s = slots[i]
        src = init[i]
        lengths = np.zeros(2, np.int64)
        holes = np.zeros(2, np.int64)
        for d in range(2):
            lengths[d], holes[d] = _stream_size(state, tables, pages, s, d, skip, max_bytes)
        sizes[i, _S2D], sizes[i, _D2S] = lengths[src], lengths[1 - src]
        sizes[i, _HOLES_S2D], sizes[i, _HOLES_D2S] = holes[src], holes[1 - src]
        payload = state[s, F_PAYLEN]
        if skip and (holes[0] or holes[1]):  # bytes after the holes join the payload at its end
            taken = _taken_by_runs(runs, run_next, state, s)
            for d in (src, 1 - src):
                if holes[d]:
                    payload += min(max_bytes - payload, lengths[d] - taken[d])
        sizes[i, _PAYLOAD] = payload
        for k in range(_LISTED, _SIZES):  # the packet lists share their lengths
            sizes[i, k] = state[s, F_LISTED]


@compiled
def _fill(slots, init, S, P, skip, max_bytes, offsets, out, missed):  # pragma: no cover - compiled
    state, tables, pages, runs, run_next = S.state, S.tables, P.pages, P.runs, P.run_next
    list_time, list_bytes, list_lengths, list_next = P.list_time, P.list_bytes, P.list_lengths, P.list_next
    gaps, gap_next = P.gaps, P.gap_next
    s2d, d2s, payload = out.s2d, out.d2s, out.payload
    holes_s2d, holes_d2s = out.holes_s2d, out.holes_d2s
    times, dirs, plens, ipbytes, flags = out.times, out.dirs, out.plens, out.ipbytes, out.flags
    for i in range(slots.shape[0]):
        s = slots[i]
        src = init[i]
        at = np.zeros(2, np.int64)  # where each canonical direction's stream starts in its column
        for d in range(2):
            side = 0 if d == src else 1  # 0: src2dst
            column = s2d if side == 0 else d2s
            holes = holes_s2d if side == 0 else holes_d2s
            pos = offsets[_S2D + side, i]
            at[d] = pos
            hole_at = offsets[_HOLES_S2D + side, i]
            stream = tables[s, T_STREAM + d]
            end = state[s, F_END + d]
            if not state[s, F_HOLE + d] or not skip:
                read_bytes(pages, stream, 0, end, column, pos)
                if offsets[_HOLES_S2D + side, i + 1] > hole_at:
                    holes[hole_at] = end
            else:
                mask = tables[s, T_MASK + d]
                start = pos
                j = 0
                z, o = _received_run(pages, mask, 0, max_bytes)
                while z != -1:
                    if z > j:  # a gap before this run (also at offset 0): the join's offset
                        holes[hole_at] = pos - start
                        hole_at += 1
                    read_bytes(pages, stream, z, o - z, column, pos)
                    pos += o - z
                    j = o
                    z, o = _received_run(pages, mask, o, max_bytes)
            missed[i, d] = missed_bytes(gaps, gap_next, state, s, d)
        # The interleaved payload: runs cut from the streams just written, then (skip) the rest.
        pos = offsets[_PAYLOAD, i]
        taken = np.zeros(2, np.int64)
        page = state[s, F_RUN_HEAD]
        for r in range(state[s, F_RUN_COUNT]):
            page, run = _run_at(runs, run_next, page, r)
            d, length = run & 1, run >> 1
            column = s2d if d == src else d2s
            copy_bytes(payload, pos, column, at[d] + taken[d], length)
            taken[d] += length
            pos += length
        stop = offsets[_PAYLOAD, i + 1]
        for d in (src, 1 - src):
            side = 0 if d == src else 1
            if pos < stop and offsets[_HOLES_S2D + side, i + 1] > offsets[_HOLES_S2D + side, i]:
                column = s2d if side == 0 else d2s
                length = min(stop - pos, offsets[_S2D + side, i + 1] - at[d] - taken[d])
                copy_bytes(payload, pos, column, at[d] + taken[d], length)
                pos += length
        # Packet lists, directions mapped to src (0) / dst (1).
        pos = offsets[_LISTED, i]
        page = state[s, F_LIST_HEAD]
        for k in range(state[s, F_LISTED]):
            if k and k % LIST_PAGE == 0:
                page = list_next[page]
            j = k % LIST_PAGE
            times[pos + k] = list_time[page, j]
            dirs[pos + k] = list_bytes[page, j, 0] ^ src
            flags[pos + k] = list_bytes[page, j, 1]
            plens[pos + k] = list_lengths[page, j, 0]
            ipbytes[pos + k] = list_lengths[page, j, 1]


@compiled
def _release(slots, S, P):  # pragma: no cover - compiled
    """Give the flows' pages, runs, list pages, gap nodes and slots back."""
    state, tables, free, free_count = S.state, S.tables, P.free, P.free_count
    for s in slots:
        for d in range(2):
            release_table(free, free_count, tables[s, T_STREAM + d])
            release_table(free, free_count, tables[s, T_MASK + d])
            release_gaps(P.gap_next, free, free_count, state, s, d)
        release_runs(P.run_next, free, free_count, state, s)
        release_list(P.list_next, free, free_count, state, s)
        state[s, F_PREV_TS] = INT64_MAX
        S.free[S.free_count[0]] = s
        S.free_count[0] += 1


def to_records(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """Flow dicts (Python values, lists) from :func:`finish_flows` columns."""
    if not len(cols["end_reason"]):
        return []
    values = dict(cols)
    for name, value in cols.items():
        if isinstance(value, np.ndarray):
            values[name] = value.tolist()
        elif isinstance(value, pa.Array):
            values[name] = value.to_pylist()
    return [dict(zip(FLOW_COLUMNS, row)) for row in zip(*(values[c] for c in FLOW_COLUMNS))]


def to_record_batch(cols: dict[str, Any]) -> pa.RecordBatch:
    """An Arrow record batch of :data:`FLOW_SCHEMA` from :func:`finish_flows` columns."""
    arrays = [value if isinstance(value := cols[field.name], pa.Array)
              else numeric_array(value, field.type) if isinstance(value, np.ndarray) else string_array(value)
              for field in FLOW_SCHEMA_FIELDS]
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)
