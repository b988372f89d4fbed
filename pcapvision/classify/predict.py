"""Captures in, per-flow verdicts out: ingest and imaging run with the model's stored parameters."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pcapvision.classify.artifact import load_model
from pcapvision.classify.evaluate import model_positive_class, predict_labels
from pcapvision.classify.novelty import Reference
from pcapvision.errors import CaptureFormatError, DataContractError, ModelFormatError, ParameterError
from pcapvision.io import atomic_path, make_metadata, metadata_from_schema, write_parquet_atomic
from pcapvision.validation import check_number, check_positive_int

log = logging.getLogger(__name__)

# Flow columns copied into each verdict so a reader can find the flow without the flows table.
FLOW_COLUMNS = ("flow_id", "community_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol",
                "first_seen_ns", "bidirectional_packets", "bidirectional_bytes", "tls_sni")


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, n_classes) as float64."""
    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]))
    return np.asarray(model.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0), dtype=np.float64)


def check_representation(metadata: Mapping[str, Any], images_schema: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ModelFormatError` unless images were made as the model's training images were.

    Compares the representation, its parameters and whether TLS names were masked.
    """
    expected = metadata.get("representation")
    if expected is None:
        raise ModelFormatError(f"{source}: the model was trained on MNIST, not on traffic images")
    expected_params = dict(metadata.get("representation_params") or {})
    got = images_schema.get("representation")
    got_params = dict(images_schema.get("representation_params") or {})
    if got != expected or got_params != expected_params:
        raise ModelFormatError(
            f"{source}: images made with representation {got!r} {got_params}, but the model expects "
            f"{expected!r} {expected_params}; re-render them with the model's parameters"
        )
    want_mask = ((metadata.get("images_schema") or {}).get("params") or {}).get("mask_tls_sni")
    got_mask = (images_schema.get("params") or {}).get("mask_tls_sni")
    if want_mask is not None and got_mask is not None and bool(want_mask) != bool(got_mask):
        raise ModelFormatError(
            f"{source}: images made with mask_tls_sni={got_mask}, but the model was trained with mask_tls_sni={want_mask}"
        )


def _ingest_options(metadata: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
    """The ingest options recorded with the model's training flows, with ``overrides`` on top."""
    from pcapvision.ingest import IngestOptions

    flows_params = (((metadata.get("images_schema") or {}).get("input") or {}).get("flows_params")) or {}
    known = {f.name for f in dataclasses.fields(IngestOptions)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ParameterError(f"The 'ingest_options' parameter must hold IngestOptions fields ({', '.join(sorted(known))}). "
                             f"Got {', '.join(unknown)} instead.")
    return IngestOptions(**{**{k: v for k, v in flows_params.items() if k in known}, **(overrides or {})})


def _verdict_rows(model: Any, metadata: Mapping[str, Any], flows: pa.Table, source_file: str, threshold: float,
                  batch_size: int, reference: Reference | None = None) -> pd.DataFrame:
    from pcapvision.imaging import images_to_array, render_flows

    class_names = list(metadata["class_names"])
    image_params = (metadata.get("images_schema") or {}).get("params") or {}
    images, _summary = render_flows(
        flows, metadata["representation"], metadata.get("representation_params") or {}, dedup=False,
        mask_tls_sni=bool(image_params.get("mask_tls_sni", False)), group_by=image_params.get("group_by", "capture"),
    )
    check_representation(metadata, metadata_from_schema(images.schema), source_file)
    x = images_to_array(images)
    proba = predict_proba(model, x, batch_size=batch_size) if len(x) else np.zeros((0, len(class_names)))
    pred = predict_labels(proba, class_names, threshold, model_positive_class(metadata)) if len(x) else np.zeros(0, dtype=int)
    verdicts = pd.DataFrame({
        "flow_id": images.column("flow_id").to_pylist(),
        "image_sha256": images.column("image_sha256").to_pylist(),
        "predicted": [class_names[i] for i in pred],
        "confidence": proba[np.arange(len(pred)), pred] if len(pred) else np.zeros(0),
        **{f"p_{name}": proba[:, k] for k, name in enumerate(class_names)},
    })
    if reference is not None:
        verdicts["nn_distance"], verdicts["in_distribution"] = reference.score(model, x, batch_size=batch_size)
    wanted = [c for c in FLOW_COLUMNS if c in flows.schema.names]
    flow_info = flows.select(wanted).to_pandas()
    if flows.num_rows == 0:  # a capture without IP flows: no rows, not an error
        return _empty_verdicts(metadata)
    # An empty verdicts frame has object columns; the merge key must match the flows' type.
    verdicts["flow_id"] = verdicts["flow_id"].astype(flow_info["flow_id"].dtype)
    flow_info.insert(0, "source_file", source_file)
    # Every flow gets a row; flows the representation cannot draw (e.g. no payload) get no verdict.
    out = flow_info.merge(verdicts, on="flow_id", how="left")
    out.insert(len(wanted) + 1, "imaged", out["image_sha256"].notna())
    return out


def predict_pcaps(
    model_dir: str | os.PathLike[str],
    pcaps: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    threshold: float | None = None,
    batch_size: int = 512,
    ingest_options: Mapping[str, Any] | None = None,
    reference: Reference | str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Per-flow verdicts for capture files (or directories/globs of them) with a traffic model.

    Each capture is read with the ingest options recorded with the model's training flows
    (``ingest_options`` overrides some of them, e.g. ``{"idle_timeout_s": 60}``) and rendered with the representation, parameters
    and TLS-name masking recorded in the model's metadata (no dedup: every flow keeps its row).
    Columns: ``source_file``, flow identification (``flow_id``, ``community_id``, addresses,
    ports...), ``imaged`` (False when the representation could not draw the flow: no verdict),
    ``image_sha256``, ``predicted``, ``confidence`` (probability of the predicted class) and
    ``p_<class>`` per class. When ``output`` is given (``.parquet`` or ``.csv``) it is written atomically;
    in CSV, text a spreadsheet would run as a formula gets a leading ``'`` (Parquet keeps it exact).
    A capture that cannot be read is skipped, not fatal: ``verdicts.attrs["failed_captures"]`` maps
    each such file to the reason, and the other captures' verdicts are still written.

    With a ``reference`` (the model's :class:`~pcapvision.classify.novelty.Reference`, or its
    ``.npz``) each verdict also gets ``nn_distance`` (to the nearest training image in the model's
    embedding) and ``in_distribution`` (distance within the reference threshold), and a warning
    gives the share of flows unlike the training data.
    """
    from pcapvision.ingest import discover_captures, read_flows

    batch_size = check_positive_int("batch_size", batch_size)
    suffix = None if output is None else Path(output).suffix.lower()
    if suffix not in (None, ".parquet", ".csv"):
        raise ParameterError(f"The 'output' parameter must end in .parquet or .csv. Got {os.fspath(output)!r} instead.")
    captures = discover_captures(pcaps)  # a wrong path fails before TensorFlow starts
    model, metadata = load_model(model_dir)
    if metadata.get("representation") is None:
        raise ModelFormatError(f"{model_dir}: the model was trained on MNIST; predict needs a model trained on traffic images")
    thr = float((metadata.get("params") or {}).get("threshold", 0.5)) if threshold is None else \
        check_number("threshold", threshold, min_value=0, max_value=1)
    if reference is not None and not isinstance(reference, Reference):
        reference = Reference.load(reference)
    if reference is not None and reference.model_sha256 != metadata.get("model_sha256"):
        raise ModelFormatError(f"{model_dir}: the embedding reference was made for another model")
    options = _ingest_options(metadata, ingest_options)
    frames = []
    failures: dict[str, str] = {}
    for capture in captures:
        # A bad capture costs its own verdicts only: record why, go on, write the rest.
        try:
            flows = read_flows(capture, options)
            rows = _verdict_rows(model, metadata, flows, os.fspath(capture), thr, batch_size, reference)
        except (CaptureFormatError, DataContractError, OSError) as exc:
            failures[os.fspath(capture)] = " ".join(str(exc).split())
            log.error("%s: failed, no verdicts: %s", capture, failures[os.fspath(capture)])
            continue
        frames.append(rows)
        log.info("%s: %d flows, %d imaged", capture, len(rows), int(rows["imaged"].sum()))
    verdicts = pd.concat(frames, ignore_index=True) if frames else _empty_verdicts(metadata)
    if reference is not None and len(verdicts):
        _warn_out_of_distribution(verdicts, reference)
    if output is not None:
        _write_verdicts(verdicts, Path(output), metadata, thr)
    verdicts.attrs["failed_captures"] = failures
    return verdicts


def _empty_verdicts(metadata: Mapping[str, Any]) -> pd.DataFrame:
    columns = ["source_file", *FLOW_COLUMNS, "imaged", "image_sha256", "predicted", "confidence",
               *(f"p_{name}" for name in metadata["class_names"])]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is a string a spreadsheet would run as a formula
    (starts with ``= + - @``, tab or CR and is not a plain number); anything else unchanged."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names are safe to open in a spreadsheet
    (see :func:`csv_safe_cell`); the Parquet output keeps the exact strings."""
    out = frame.rename(columns=csv_safe_cell)
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(csv_safe_cell)
    return out


def _warn_out_of_distribution(verdicts: pd.DataFrame, reference: Reference) -> None:
    scored = verdicts.loc[verdicts["imaged"], "in_distribution"].astype(bool)
    if len(scored) == 0:
        return
    share = float((~scored).mean())
    expected = 1.0 - reference.quantile
    line = (f"{share:.1%} of {len(scored)} imaged flows are unlike the model's training data (nearest training image "
            f"further than {reference.threshold:.3g} in the model's embedding; about {expected:.0%} of training-like "
            "flows are)")
    if share > 2 * expected:
        log.warning("%s: verdicts on them are extrapolation", line)
    else:
        log.info("%s", line)


def _write_verdicts(verdicts: pd.DataFrame, output: Path, metadata: Mapping[str, Any], threshold: float) -> None:
    if output.suffix.lower() == ".csv":
        with atomic_path(output) as tmp:
            csv_safe(verdicts).to_csv(tmp, index=False)
        return
    table = pa.Table.from_pandas(verdicts, preserve_index=False)
    write_parquet_atomic(table, output, make_metadata(
        "predict", {"threshold": threshold}, model_sha256=metadata.get("model_sha256"),
        class_names=metadata.get("class_names"), representation=metadata.get("representation"),
        representation_params=metadata.get("representation_params"),
    ))


__all__ = ["FLOW_COLUMNS", "check_representation", "csv_safe", "csv_safe_cell", "predict_pcaps", "predict_proba"]
