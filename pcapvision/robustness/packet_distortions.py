"""Packet-level distortions measured on real packets: distort the capture, re-ingest, re-render.

``traffic_distortions`` edits flows-table rows; for packet drop, duplication, reordering and
jitter that edit never reaches the reassembled payload, so it cannot say whether reassembly
really hides those events. Here each evaluated TCP flow's packets are read from its source
capture, the event is applied to the packets themselves (a dropped segment is retransmitted
``RETRANSMIT_DELAY_MS`` later; a duplicate follows its original; two neighbours swap; times get
N(0, sigma^2) ms and the capture is re-sorted by time), the distorted flows are written to one
capture per distortion and severity, re-ingested with the flows table's ingest options (the real
reassembler) and re-rendered with the model's representation.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.errors import DataContractError
from pcapvision.robustness.traffic_distortions import RETRANSMIT_DELAY_MS, TRAFFIC_DISTORTIONS

PACKET_DISTORTIONS = ("packet_drop", "packet_duplication", "packet_reordering", "timing_jitter")

Timed = list[tuple[float, Any]]  # (time in s, scapy packet)


def _has_data(pkt: Any) -> bool:
    from scapy.layers.inet import TCP

    return TCP in pkt and len(bytes(pkt[TCP].payload)) > 0


def drop(packets: Timed, fraction: float, rng: np.random.Generator) -> Timed:
    """Data segments lost with probability ``fraction`` are retransmitted RETRANSMIT_DELAY_MS later."""
    out = []
    for i, (t, p) in enumerate(packets):
        lost = i > 0 and _has_data(p) and rng.random() < fraction
        out.append((t + RETRANSMIT_DELAY_MS / 1000.0 if lost else t, p))
    return sorted(out, key=lambda tp: tp[0])


def duplicate(packets: Timed, fraction: float, rng: np.random.Generator) -> Timed:
    out = []
    for t, p in packets:
        out.append((t, p))
        if rng.random() < fraction:
            out.append((t + 50e-6, p.copy()))
    return out


def reorder(packets: Timed, fraction: float, rng: np.random.Generator) -> Timed:
    """Neighbours swap arrival order (timestamps stay in capture order)."""
    out = list(packets)
    for i in range(1, len(out) - 1):
        if rng.random() < fraction:
            (ta, a), (tb, b) = out[i], out[i + 1]
            out[i], out[i + 1] = (ta, b), (tb, a)
    return out


def jitter(packets: Timed, sigma_ms: float, rng: np.random.Generator) -> Timed:
    if not packets:
        return []
    t0 = packets[0][0]
    moved = [(max(t + rng.normal(0.0, sigma_ms) / 1000.0, t0), p) for t, p in packets]
    moved[0] = packets[0]
    return sorted(moved, key=lambda tp: tp[0])


EVENTS: dict[str, Callable[[Timed, float, np.random.Generator], Timed]] = {
    "packet_drop": drop, "packet_duplication": duplicate, "packet_reordering": reorder, "timing_jitter": jitter,
}


def write_capture(flows: list[Timed], path: str | os.PathLike[str]) -> Path:
    """One capture holding every flow's packets with their (possibly changed) times."""
    from scapy.utils import wrpcap

    packets = []
    for flow in flows:
        for t, p in flow:
            q = p.copy()
            q.time = t
            packets.append(q)
    wrpcap(os.fspath(path), packets)
    return Path(path)


def _key(src_ip: str, src_port: int, dst_ip: str, dst_port: int) -> tuple[str, int, str, int]:
    import ipaddress

    return str(ipaddress.ip_address(src_ip)), int(src_port), str(ipaddress.ip_address(dst_ip)), int(dst_port)


def packet_level_sweep(model: Any, rows: list[dict[str, Any]], labels: dict[str, int], representation: str,
                       params: dict[str, Any], *, ingest_params: dict[str, Any] | None = None, mask_tls_sni: bool = False,
                       binary: Any = None, seed: int = 0, workdir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Accuracy and the fraction of images that changed, per packet-level distortion and severity.

    ``rows``: flows-table rows (TCP flows with a ``source_file``); ``labels``: flow_id -> class
    index. Severity 0 is the undistorted packets, re-ingested: images are compared with it.
    """
    from pcapvision.ingest import IngestOptions, read_flows
    from pcapvision.robustness.attacks import decide, predict_proba
    from pcapvision.robustness.capture_rewrite import flow_packets
    from pcapvision.robustness.traffic_distortions import render_for_model

    options = IngestOptions(**{k: v for k, v in (ingest_params or {}).items()
                               if k in ("idle_timeout_s", "active_timeout_s", "max_bytes", "max_packets")})
    flows, keys, unreadable = [], [], []
    for row in rows:
        try:
            packets = flow_packets(row["source_file"], row, 0)
        except (DataContractError, OSError) as exc:  # capture moved, or scapy finds no TCP packet of it
            unreadable.append(" ".join(str(exc).split()))
            continue
        flows.append([(float(p.time), p) for p, _ in packets])
        keys.append((row["flow_id"], _key(row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"])))
    if not flows:
        return {"skipped": f"no flow's packets could be read back from its capture ({unreadable[:1]})"}

    def measure(path: Path) -> dict[str, np.ndarray]:
        table = read_flows(path, options)
        x, fid = render_for_model(table, representation, params, mask_tls_sni)
        ends = [_key(*v) for v in zip(*(table.column(c).to_pylist()
                                         for c in ("src_ip", "src_port", "dst_ip", "dst_port")))]
        by_key = dict(zip(ends, table.column("flow_id").to_pylist()))
        index = {f: i for i, f in enumerate(fid)}
        images = {}
        for original, key in keys:
            new = by_key.get(key)
            if new is not None and new in index:
                images[original] = x[index[new]]
        return images

    tmp = tempfile.TemporaryDirectory(dir=workdir)
    try:
        base = measure(write_capture(flows, Path(tmp.name) / "clean.pcap"))

        def score(images: dict[str, np.ndarray]) -> tuple[float, float]:
            ids = [f for f, _ in keys if f in images]
            if not ids:
                return 0.0, float("nan")
            pred = decide(predict_proba(model, np.stack([images[f] for f in ids])), binary)
            right = sum(int(p == labels[f]) for p, f in zip(pred, ids))
            changed = sum(int(f not in base or not np.array_equal(images[f], base[f])) for f in ids)
            return right / len(keys), changed / len(ids)

        accuracy, _ = score(base)
        out_rows = [{"distortion": "none (packets re-ingested)", "severity": 0, "parameter": None, "value": None,
                     "accuracy": accuracy, "fraction_images_changed": 0.0, "n_flows": len(keys)}]
        for name in PACKET_DISTORTIONS:
            _, param, levels = TRAFFIC_DISTORTIONS[name]
            for severity in range(1, 6):
                rng = np.random.default_rng([seed, severity, PACKET_DISTORTIONS.index(name)])
                distorted = [EVENTS[name](flow, levels[severity - 1], rng) for flow in flows]
                path = write_capture(distorted, Path(tmp.name) / f"{name}-{severity}.pcap")
                acc, changed = score(measure(path))
                out_rows.append({"distortion": name, "severity": severity, "parameter": param,
                                 "value": levels[severity - 1], "accuracy": acc, "fraction_images_changed": changed,
                                 "n_flows": len(keys)})
    finally:
        tmp.cleanup()
    return {"rows": out_rows, "n_flows_unreadable": len(unreadable), "unreadable": unreadable[:10], "note": (
        "packets of each flow distorted in the capture, re-ingested (real reassembly) and re-rendered; a flow the "
        "representation can no longer draw counts as misclassified")}


__all__ = ["EVENTS", "PACKET_DISTORTIONS", "drop", "duplicate", "jitter", "packet_level_sweep", "reorder",
           "write_capture"]
