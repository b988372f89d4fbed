"""Drift of new traffic against the champion's training traffic.

Compared, flow by flow (the flows table, before imaging): the class and family mix, the
protocol mix, the TLS-version mix, the share of flows with an SNI (total-variation distance of
each mix: half the L1 distance of the two share vectors, 0 same, 1 disjoint), and the payload
length distribution (two-sample Kolmogorov-Smirnov statistic). Image by image: the share of new
images whose nearest training image in the champion's embedding is further than the training
data's own 99th percentile (:mod:`pcapvision.classify.novelty`); about 1% without drift.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from pcapvision.retrain.config import DriftLimits

log = logging.getLogger(__name__)

FLOW_COLUMNS = ("source_sha256", "dst_ip", "label", "family", "protocol", "tls_version", "tls_sni",
                "src2dst_payload_bytes", "dst2src_payload_bytes")
PROTOCOLS = {6: "tcp", 17: "udp"}
MIXES = ("label", "family", "protocol", "tls_version", "sni_present")


def flow_features(flows_path: str | os.PathLike[str], groups: Iterable[str], group_column: str = "source_sha256") -> pd.DataFrame:
    """Per-flow drift features of the flows in ``groups`` (values of ``group_column``)."""
    dataset = ds.dataset(os.fspath(flows_path), format="parquet", exclude_invalid_files=True,
                         ignore_prefixes=[".", "_"])
    columns = [c for c in FLOW_COLUMNS if c in dataset.schema.names]
    table = dataset.to_table(columns=columns, filter=ds.field(group_column).isin(sorted(set(groups))))
    frame = table.to_pandas()
    out = pd.DataFrame({
        "label": frame.get("label", pd.Series(dtype=object)).fillna("(none)").astype(str),
        "family": frame.get("family", pd.Series(dtype=object)).fillna("(none)").astype(str),
        "protocol": frame["protocol"].map(lambda p: PROTOCOLS.get(int(p), str(p))),
        "tls_version": frame.get("tls_version", pd.Series(dtype=object)).fillna("no TLS").astype(str),
        "sni_present": frame.get("tls_sni", pd.Series(dtype=object)).notna().map({True: "SNI", False: "no SNI"}),
        "payload_bytes": (frame["src2dst_payload_bytes"] + frame["dst2src_payload_bytes"]).astype(np.int64),
    })
    return out


def shares(values: pd.Series) -> dict[str, float]:
    counts = values.value_counts()
    total = counts.sum()
    return {str(k): float(v / total) for k, v in counts.sort_index().items()} if total else {}


def total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


def drift_report(new: pd.DataFrame | None, reference: pd.DataFrame | None, limits: DriftLimits, *,
                 far_share: float | None = None, far_threshold: float | None = None, n_images: int | None = None) -> dict[str, Any]:
    """The drift record of ``new`` flows against ``reference`` flows (both from :func:`flow_features`;
    None when only images are at hand) and of the share of new images far from the training images."""
    report: dict[str, Any] = {"flags": []}
    if far_share is not None:
        report["embedding"] = {"share_far_from_training": far_share, "distance_threshold": far_threshold,
                               "quantile": limits.reference_quantile, "n_new_images": n_images}
        if far_share > limits.max_far_share:
            report["flags"].append(f"{far_share:.1%} of new images are far from every training image "
                                   f"(> {limits.max_far_share:.0%})")
    if new is None or reference is None or len(new) == 0 or len(reference) == 0:
        report["flows_skipped"] = ("no flows table (an images table was given)" if new is None or reference is None
                                   else "no new flows" if len(new) == 0 else "no reference flows")
    else:
        report.update(_flow_drift(new, reference, limits, report["flags"]))
    report["drifted"] = bool(report["flags"])
    return report


def _flow_drift(new: pd.DataFrame, reference: pd.DataFrame, limits: DriftLimits, flags: list[str]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    report: dict[str, Any] = {"n_new_flows": int(len(new)), "n_reference_flows": int(len(reference)), "mixes": {}}
    for name in MIXES:
        a, b = shares(reference[name]), shares(new[name])
        tv = total_variation(a, b)
        report["mixes"][name] = {"reference": a, "new": b, "total_variation": tv}
        if tv > limits.max_mix_distance:
            flags.append(f"{name} mix moved: total variation {tv:.3f} > {limits.max_mix_distance:g}")
    ks = ks_2samp(reference["payload_bytes"].to_numpy(), new["payload_bytes"].to_numpy())
    report["payload_bytes"] = {
        "reference_median": float(np.median(reference["payload_bytes"])), "new_median": float(np.median(new["payload_bytes"])),
        "reference_p90": float(np.quantile(reference["payload_bytes"], 0.9)), "new_p90": float(np.quantile(new["payload_bytes"], 0.9)),
        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
    }
    if ks.statistic > limits.max_payload_ks:
        flags.append(f"payload length distribution moved: KS {ks.statistic:.3f} > {limits.max_payload_ks:g}")
    return report


__all__ = ["MIXES", "drift_report", "flow_features", "shares", "total_variation"]
