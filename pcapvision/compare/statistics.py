"""The per-flow statistics reference: a gradient-boosted tree on counts, sizes and times of a flow.

Not an image model: the strong, cheap non-image model users ask about, reported beside the image
models so that their standing against it is plain. Features use no address, port, absolute time
or label-bearing column; only the flow's own counts and the per-packet lists of ingest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

FEATURES = (
    "src2dst_packets", "dst2src_packets", "src2dst_bytes", "dst2src_bytes", "src2dst_payload_bytes",
    "dst2src_payload_bytes", "duration_ms", "ip_bytes_mean", "ip_bytes_std", "payload_bytes_mean",
    "payload_bytes_std", "iat_ms_mean", "iat_ms_std", "response_packet_fraction",
)
COLUMNS = ("src2dst_packets", "dst2src_packets", "src2dst_bytes", "dst2src_bytes", "src2dst_payload_bytes",
           "dst2src_payload_bytes", "duration_ms", "packet_time_ms", "packet_direction", "packet_ip_bytes",
           "packet_payload_bytes")
DESCRIPTION = ("gradient-boosted trees (scikit-learn HistGradientBoostingClassifier) on per-flow statistics: "
               "packet, byte and payload-byte counts per direction, duration, mean/std of IP and payload sizes "
               "and of inter-arrival times over the kept packets, share of response packets")


def _per_flow_mean_std(values: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(values.value_lengths().fill_null(0), dtype=np.int64)
    flat = np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    n = np.maximum(lengths, 1)
    mean = np.bincount(rows, flat, minlength=len(lengths)) / n
    var = np.bincount(rows, (flat - mean[rows]) ** 2, minlength=len(lengths)) / n
    return mean, np.sqrt(var)


def _inter_arrivals(times: pa.ListArray) -> pa.ListArray:
    offsets = np.asarray(times.offsets, dtype=np.int64)
    flat = np.asarray(times.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    gaps = np.diff(flat, prepend=0.0)
    first = offsets[:-1][np.diff(offsets) > 0]
    keep = np.ones(flat.size, dtype=bool)
    keep[first] = False  # no gap before a flow's first packet
    lengths = np.maximum(np.diff(offsets) - 1, 0)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array(gaps[keep]))


def flow_statistics(flows: pa.Table) -> np.ndarray:
    """``(N, len(FEATURES))`` float64 features of each flow, in :data:`FEATURES` order."""
    def col(name: str) -> Any:
        c = flows.column(name)
        return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c

    out = [np.asarray(col(name).to_numpy(zero_copy_only=False), dtype=np.float64) for name in COLUMNS[:7]]
    out += [*_per_flow_mean_std(col("packet_ip_bytes")), *_per_flow_mean_std(col("packet_payload_bytes"))]
    out += list(_per_flow_mean_std(_inter_arrivals(col("packet_time_ms"))))
    out.append(_per_flow_mean_std(col("packet_direction"))[0])
    return np.column_stack(out)


def fit_reference(features: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """The reference model fitted on ``features``/``y`` (class indices)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    # One OpenMP thread: beside TensorFlow's threads on a small machine, more threads spin against
    # each other (measured 2 s with one thread against 55 s with the default on a loaded 2-core VM).
    with threadpool_limits(1):
        return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed).fit(features, y)


def reference_proba(model: Any, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with a column per class (zeros for a class absent from the training rows)."""
    from threadpoolctl import threadpool_limits

    proba = np.zeros((len(features), n_classes))
    with threadpool_limits(1):
        proba[:, model.classes_.astype(int)] = model.predict_proba(features)
    return proba
