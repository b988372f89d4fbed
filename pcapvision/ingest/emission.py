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
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pcapvision.ingest.community_id import community_ids
from pcapvision.ingest.flowbuffers import INT32_CODE
from pcapvision.ingest.flowschema import END_OPEN, END_REASONS, FLOW_COLUMNS, FLOW_SCHEMA, FLOW_SCHEMA_FIELDS
from pcapvision.ingest.flowtable import INT64_MAX
from pcapvision.ingest.packets import PROTO_TCP, format_address
from pcapvision.ingest.tls import client_hello_metadata

if TYPE_CHECKING:
    from pcapvision.ingest.assembler import FlowAssembler

__all__ = ["finish_flows", "output_order", "to_record_batch", "to_records"]

_INT32_MAX = np.iinfo(np.int32).max
_SWAP_DIRECTION = bytes([1, 0]) + bytes(254)  # bytes.translate table: 0 <-> 1


def _address_text(packed: bytes, ip_version: int) -> str:
    if ip_version == 4:  # inet_ntop prints IPv4 exactly as format_address does, only faster
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return _ipv6_text(packed)


@functools.lru_cache(maxsize=1 << 14)
def _ipv6_text(packed: bytes) -> str:
    return format_address(packed, 6)


def output_order(asm: FlowAssembler, slots: np.ndarray) -> np.ndarray:
    """The order flows are emitted in: (first_seen_ns, frame index of the first packet, tuple)."""
    words = asm._words[slots]
    return np.lexsort((words[:, 4], words[:, 3], words[:, 2], words[:, 1], words[:, 0],
                       asm._first_frame[slots], asm._first_ts[slots]))


def finish_flows(asm: FlowAssembler, slots: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Columns of the flows in ``slots``, in output order; frees the slots.

    Numeric columns are numpy arrays, the others lists with one entry per flow; the payload
    and ``packet_*`` entries are each flow's own buffers (``bytearray``/``array``/``bytes``;
    directions already src/dst), copied once when a column is built.
    """
    slots = slots.astype(np.int64)
    closure = asm._code[slots]
    codes = np.where(closure != END_OPEN, closure, codes)
    order = output_order(asm, slots)
    slots, codes = slots[order], codes[order]
    words = asm._words[slots]
    # Map canonical (A, B) to (src, dst) by the initiator's side.
    init = np.where(asm._syn_dir[slots] >= 0, asm._syn_dir[slots], asm._first_dir[slots]).astype(np.int64)
    rows = np.arange(len(slots))
    w4 = words[:, 4]
    port_a = ((w4 >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16)
    port_b = (w4 & np.uint64(0xFFFF)).astype(np.uint16)
    swap = init == 1
    first, last = asm._first_ts[slots], asm._max_ts[slots]
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
    for name, counts in (("packets", asm._pkts[slots]), ("bytes", asm._bytes[slots]),
                         ("payload_bytes", asm._pbytes[slots]), ("missed_bytes", asm._gaps.missed(slots))):
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
    bufs = asm._bufs
    flows = [bufs[slot] for slot in slot_list]
    for slot in slot_list:
        bufs[slot] = None
        asm._keys[slot] = None
    streams = [buf.streams for buf in flows]
    flip = swap.tolist()
    no_holes = array(INT32_CODE)
    holes = [(no_holes, no_holes)] * len(flows)
    payload = [None] * len(flows)
    holed = [i for i, buf in enumerate(flows) if buf.holes is not None]
    if holed:  # hole mode: a max_bytes buffer of which the first _end bytes are contiguous
        ends = asm._end[slots].tolist()
        skip = asm.options.on_hole == "skip"
        for i in holed:
            (s0, holes0), (s1, holes1) = (flows[i].stream_bytes(0, ends[i][0], skip),
                                          flows[i].stream_bytes(1, ends[i][1], skip))
            if holes0 or holes1:
                asm.stats["flows_with_payload_hole"] += 1
                if skip:  # bytes after the holes join the interleaved payload at its end
                    after = tuple(d for d in ((1, 0) if flip[i] else (0, 1)) if (holes0, holes1)[d])
                    payload[i] = flows[i].payload((s0, s1), after, asm._max_bytes)
            streams[i] = (s0, s1)
            holes[i] = (array(INT32_CODE, holes0), array(INT32_CODE, holes1))
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
    asm._prev_ts[slots] = INT64_MAX
    asm._free.extend(slot_list)
    return cols


def to_records(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """Flow dicts (Python values, lists) from :func:`finish_flows` columns."""
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


def to_record_batch(cols: dict[str, Any]) -> pa.RecordBatch:
    """An Arrow record batch of :data:`FLOW_SCHEMA` from :func:`finish_flows` columns."""
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
