"""Network-level distortions: change the flow (flows-table row), not the pixels, then re-render.

Each distortion takes a flows table and a severity 1..5 and returns a flows table of the same
schema in which each flow looks as it would after that event on the wire:

* ``payload_shift``: k bytes inserted at the start of the payload (a protocol header grew).
* ``truncation``: the flow ends early: only the first fraction of its packets and payload.
* ``random_padding``: the sender appends n random bytes in one extra packet.
* ``tls_record_padding``: every TLS application-data record carries p extra bytes (TLS 1.3
  record padding); record headers found by walking the payload from its start.
* ``packet_drop``, ``packet_duplication``, ``packet_reordering``: packet-list events. Only the
  per-packet columns are edited (a drop becomes a retransmission ``RETRANSMIT_DELAY_MS`` later);
  the reassembled ``payload`` columns are left as they were, on the assumption that TCP
  retransmission and reassembly restore them. That assumption is not measured here: the events
  are not applied to the capture's packets and re-ingested.
* ``timing_jitter``: packet times get N(0, sigma^2) ms of jitter (kept sorted and >= 0).

Payload-based images react to the first four only; ``flowpic`` to all but the payload shift.
Not modelled: jitter or reordering that swaps data packets of the two directions, which would
change how the session-order ``payload`` interleaves them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError
from pcapvision.validation import check_choice, check_int

RETRANSMIT_DELAY_MS = 200.0
TLS_APPLICATION_DATA = 0x17
_PACKET_COLUMNS = ("packet_time_ms", "packet_direction", "packet_payload_bytes", "packet_ip_bytes", "packet_tcp_flags")

Row = dict[str, Any]


def _cap(column: str, data: bytes, caps: dict[str, int]) -> bytes:
    return data[: caps[column]]


def _packets(row: Row) -> tuple[list[tuple], list[str]]:
    """The packet lists as one tuple per packet (time first), and the columns they came from."""
    cols = [c for c in _PACKET_COLUMNS if row.get(c) is not None]
    return list(zip(*(row[c] for c in cols))), cols


def _set_packets(row: Row, packets: list[tuple], cols: list[str]) -> None:
    for i, c in enumerate(cols):
        row[c] = [p[i] for p in packets]


def _payload_columns(row: Row) -> list[str]:
    return [c for c in ("payload", "src2dst_payload", "dst2src_payload") if c in row and row[c] is not None]


def payload_shift(row: Row, k: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    header = rng.integers(0, 256, int(k), dtype=np.uint8).tobytes()
    # The initiator speaks first in nearly every protocol: its header change leads the session.
    for c in ("payload", "src2dst_payload"):
        if c in _payload_columns(row) and row[c]:
            row[c] = _cap(c, header + row[c], caps)
    packets, cols = _packets(row)
    for i, p in enumerate(packets):
        if len(p) > 2 and p[1] == 0 and p[2] > 0:  # the first initiator packet with data carries it
            packets[i] = tuple(v + int(k) if j in (2, 3) else v for j, v in enumerate(p))
            break
    _set_packets(row, packets, cols)


def truncation(row: Row, keep_fraction: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    for c in _payload_columns(row):
        row[c] = row[c][: int(np.ceil(len(row[c]) * keep_fraction))]
    packets, cols = _packets(row)
    _set_packets(row, packets[: max(1, int(np.ceil(len(packets) * keep_fraction)))], cols)


def random_padding(row: Row, n: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    pad = rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()
    for c in ("payload", "src2dst_payload"):
        if c in _payload_columns(row):
            row[c] = _cap(c, row[c] + pad, caps)
    packets, cols = _packets(row)
    if packets:
        last_t = packets[-1][0]
        template = {"packet_time_ms": last_t + 1.0, "packet_direction": 0, "packet_payload_bytes": int(n),
                    "packet_ip_bytes": int(n) + 40, "packet_tcp_flags": 0x18}
        packets.append(tuple(template[c] for c in cols))
    _set_packets(row, packets, cols)


def pad_tls_records(data: bytes, pad: int, rng: np.random.Generator) -> tuple[bytes, int]:
    """Add ``pad`` random bytes to each TLS application-data record found from offset 0.

    Walks records while the 5-byte headers look like TLS (type 20..23, version 3.x); the rest of
    the data is kept as is. A record cut off by the end of ``data`` gets the new length field only.
    Returns the new bytes and the number of records padded.
    """
    out = bytearray()
    pos, padded = 0, 0
    while pos + 5 <= len(data):
        rtype, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5], "big")
        if not (20 <= rtype <= 23 and major == 3 and length <= 16384 + 256):
            break
        body = data[pos + 5 : pos + 5 + length]
        if rtype == TLS_APPLICATION_DATA:
            out += bytes([rtype, major, data[pos + 2]]) + (length + pad).to_bytes(2, "big") + body
            # A record cut off by the payload cap still gets its new length; its padding lies past the cut.
            if len(body) == length:
                out += rng.integers(0, 256, pad, dtype=np.uint8).tobytes()
            padded += 1
        else:
            out += data[pos : pos + 5 + length]
        pos += 5 + length
    out += data[pos:]
    return bytes(out), padded


def tls_record_padding(row: Row, pad: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    for c in _payload_columns(row):
        row[c] = _cap(c, pad_tls_records(row[c], int(pad), rng)[0], caps)
    packets, cols = _packets(row)
    # Records are not mapped to packets; a data packet after the handshake carries about one record.
    seen_data = 0
    for i, p in enumerate(packets):
        if len(p) > 2 and p[2] > 0:
            seen_data += 1
            if seen_data > 4:
                packets[i] = tuple(v + int(pad) if j in (2, 3) else v for j, v in enumerate(p))
    _set_packets(row, packets, cols)


def packet_drop(row: Row, fraction: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    packets, cols = _packets(row)
    if len(packets) < 2:
        return
    dropped = rng.random(len(packets)) < fraction
    dropped[0] = False  # the first packet defines the flow
    moved = [(p[0] + RETRANSMIT_DELAY_MS, *p[1:]) for p, d in zip(packets, dropped) if d]
    kept = [p for p, d in zip(packets, dropped) if not d]
    _set_packets(row, sorted(kept + moved, key=lambda p: p[0]), cols)


def packet_duplication(row: Row, fraction: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    packets, cols = _packets(row)
    out = []
    for p, dup in zip(packets, rng.random(len(packets)) < fraction):
        out.append(p)
        if dup:
            out.append((p[0] + 0.05, *p[1:]))
    _set_packets(row, out, cols)


def packet_reordering(row: Row, fraction: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    packets, cols = _packets(row)
    for i in range(1, len(packets) - 1):
        if rng.random() < fraction:
            # Arrival order of two neighbours swaps; the timestamps stay in capture order.
            a, b = packets[i], packets[i + 1]
            packets[i], packets[i + 1] = (a[0], *b[1:]), (b[0], *a[1:])
    _set_packets(row, packets, cols)


def timing_jitter(row: Row, sigma_ms: float, rng: np.random.Generator, caps: dict[str, int]) -> None:
    packets, cols = _packets(row)
    if not packets:
        return
    times = np.asarray([p[0] for p in packets], np.float64)
    jittered = np.maximum(times + rng.normal(0.0, sigma_ms, len(times)), 0.0)
    jittered[0] = 0.0  # times are relative to the first packet
    order = np.argsort(jittered, kind="stable")
    _set_packets(row, [(float(jittered[i]), *packets[i][1:]) for i in order], cols)


TrafficDistortion = Callable[[Row, float, np.random.Generator, dict[str, int]], None]

TRAFFIC_DISTORTIONS: dict[str, tuple[TrafficDistortion, str, tuple[float, ...]]] = {
    "payload_shift": (payload_shift, "bytes", (1, 2, 4, 8, 16)),
    "truncation": (truncation, "keep_fraction", (0.9, 0.75, 0.5, 0.25, 0.1)),
    "random_padding": (random_padding, "bytes", (16, 32, 64, 128, 256)),
    "tls_record_padding": (tls_record_padding, "bytes_per_record", (1, 4, 16, 64, 255)),
    "packet_drop": (packet_drop, "fraction", (0.02, 0.05, 0.1, 0.2, 0.3)),
    "packet_duplication": (packet_duplication, "fraction", (0.02, 0.05, 0.1, 0.2, 0.3)),
    "packet_reordering": (packet_reordering, "fraction", (0.02, 0.05, 0.1, 0.2, 0.3)),
    "timing_jitter": (timing_jitter, "sigma_ms", (1.0, 5.0, 20.0, 100.0, 500.0)),
}


def distort_flows(flows: pa.Table, name: str, severity: int, *, seed: int = 0) -> pa.Table:
    """``flows`` with distortion ``name`` at ``severity`` (1..5) applied to every row.

    Payload columns keep the length cap they had (the longest value in the table, so a flow
    never gains more bytes than ingest would have kept).
    """
    check_choice("distortion", name, TRAFFIC_DISTORTIONS)
    severity = check_int("severity", severity, min_value=1, max_value=5)
    func, _, levels = TRAFFIC_DISTORTIONS[name]
    rows = flows.to_pylist()
    caps = {c: max((len(r[c]) for r in rows if r.get(c) is not None), default=0)
            for c in ("payload", "src2dst_payload", "dst2src_payload") if c in flows.schema.names}
    rng = np.random.default_rng([seed, severity, sorted(TRAFFIC_DISTORTIONS).index(name)])
    for row in rows:
        func(row, levels[severity - 1], rng, caps)
    try:
        return pa.Table.from_pylist(rows, schema=flows.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataContractError(f"flows table: distortion {name!r} produced rows that break its schema ({exc})") from exc


def read_flows_table(path: str | os.PathLike[str], flow_ids: Sequence[str] | None = None) -> pa.Table:
    """A flows table (file or dataset directory), optionally only the rows of ``flow_ids``."""
    import pyarrow.compute as pc
    from pcapvision.io import parquet_files, read_parquet_table

    parts = []
    for f in parquet_files(path):
        part = read_parquet_table(f).replace_schema_metadata(None)
        if "flow_id" not in part.schema.names:
            raise DataContractError(f"{f}: not a flows table (no flow_id column)")
        if flow_ids is not None:
            part = part.filter(pc.is_in(part.column("flow_id"), value_set=pa.array(list(flow_ids), pa.string())))
        parts.append(part)
    return pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]


def render_for_model(flows: pa.Table, representation: str, params: Mapping[str, Any],
                     mask_tls_sni: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32, [0, 1]) and flow ids of ``flows`` rendered as the model's training images."""
    from pcapvision.imaging import images_to_array, render_flows

    table, _ = render_flows(flows, representation, dict(params), dedup=False, mask_tls_sni=mask_tls_sni)
    return images_to_array(table), np.asarray(table.column("flow_id").to_pylist(), dtype=str)


def traffic_severity_sweep(model: Any, ev: Any, eval_idx: np.ndarray, flows_path: str | os.PathLike[str], *,
                           seed: int = 0, binary: Any = None) -> list[dict[str, Any]]:
    """Accuracy per network-level distortion and severity on the evaluation flows (decided at the
    model's operating point: ``binary`` is the suite's BinaryTarget for two-class models).

    ``ev`` is the suite's :class:`~pcapvision.robustness.suite.EvalData` (its ``flow_id`` joins
    the flows table). Severity 0 is the re-rendered undistorted flows; flows the representation
    skips after a distortion (e.g. no payload left) count as misclassified.
    """
    from pcapvision.robustness.attacks import decide, predict_proba

    ids = ev.flow_id[eval_idx]
    labels = dict(zip(ids, ev.y[eval_idx]))
    flows = read_flows_table(flows_path, ids)
    if flows.num_rows == 0:
        raise DataContractError(f"{flows_path}: none of the {len(ids)} evaluated flow_ids is in this flows table")
    mask = bool(((ev.images_schema or {}).get("params") or {}).get("mask_tls_sni", False))

    def accuracy(table: pa.Table) -> float:
        x, fid = render_for_model(table, ev.representation, ev.representation_params, mask)
        pred = decide(predict_proba(model, x), binary) if len(x) else np.zeros(0, np.int64)
        right = sum(int(p == labels[f]) for p, f in zip(pred, fid))
        return right / flows.num_rows

    rows = [{"distortion": "none (re-rendered)", "severity": 0, "parameter": None, "value": None,
             "accuracy": accuracy(flows), "n_flows": flows.num_rows}]
    for name, (_, param, levels) in TRAFFIC_DISTORTIONS.items():
        for severity in range(1, 6):
            rows.append({"distortion": name, "severity": severity, "parameter": param, "value": levels[severity - 1],
                         "accuracy": accuracy(distort_flows(flows, name, severity, seed=seed)), "n_flows": flows.num_rows})
    return rows


__all__ = ["RETRANSMIT_DELAY_MS", "TRAFFIC_DISTORTIONS", "distort_flows", "pad_tls_records", "read_flows_table",
           "render_for_model", "traffic_severity_sweep"]
