"""Run the comparison: every (representation x architecture) on one shared leak-free split, several seeds.

The split is made once, over flows: every representation is rendered from the same flows table
(dedup and conflict rules of the imaging stage apply per representation), only the flows kept by
*every* representation are used (so all rows compared are the same flows), and whole split groups
(captures or servers) go to train, validation or test. Models, baselines and the statistics
reference are fitted on the training groups, stopped early and chosen on the validation groups,
and reported on the test groups.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcapvision.compare import statistics
from pcapvision.console import progress
from pcapvision.errors import DataContractError, ParameterError
from pcapvision.io import metadata_from_schema, parquet_files
from pcapvision.validation import check_choice, check_int, check_positive_int

log = logging.getLogger(__name__)

DEFAULT_REPRS = ("payload", "flowpic", "packets")
DEFAULT_ARCHS = ("cnn", "cnn-embed", "cnn1d")
DEFAULT_SEEDS = 3
DEFAULT_EPOCHS = 12


@dataclass
class CompareData:
    """The shared rows: one entry per representation, all over the same flows in the same order."""

    flow_id: np.ndarray
    y: np.ndarray  # class index per flow
    class_names: list[str]
    groups: np.ndarray
    images: dict[str, np.ndarray]  # representation -> float32 (N, 28, 28, 1)
    payload_length: dict[str, np.ndarray | None]
    features: np.ndarray | None  # per-flow statistics (None for an images-table input)
    split: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows_per_representation: dict[str, int] = field(default_factory=dict)


def check_compare_params(reprs: Sequence[str], archs: Sequence[str], seeds: int, epochs: int, target: str,
                         group_by: str, split_seed: int, positive_class: str | None = None) -> dict[str, Any]:
    """All parameters checked in one place; returns them as the record stores them."""
    from pcapvision.classify import ARCHITECTURES
    from pcapvision.imaging import REPRESENTATIONS

    reprs, archs = list(reprs), list(archs)
    if not reprs or not archs:
        raise ParameterError("The 'reprs' and 'archs' parameters must each name at least one entry. Got "
                             f"{reprs!r} and {archs!r} instead.")
    for r in reprs:
        check_choice("reprs", r, REPRESENTATIONS)
    for a in archs:
        check_choice("archs", a, [x for x in ARCHITECTURES if x != "mlp"])
    if len(set(reprs)) != len(reprs) or len(set(archs)) != len(archs):
        raise ParameterError(f"The 'reprs' and 'archs' parameters must not repeat an entry. Got {reprs!r} and {archs!r} instead.")
    return {"reprs": reprs, "archs": archs, "seeds": check_positive_int("seeds", seeds),
            "epochs": check_positive_int("epochs", epochs), "target": check_choice("target", target, ("label", "family")),
            "group_by": check_choice("group_by", group_by, ("capture", "server")),
            "split_seed": check_int("split_seed", split_seed, min_value=0),
            # Checked against the classes once the data is read (resolve_positive_class); never guessed.
            "positive_class": None if positive_class is None else str(positive_class)}


def _read_table(path: str | os.PathLike[str]) -> pa.Table:
    import pyarrow.parquet as pq

    files = parquet_files(path)
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowException, OSError) as exc:
            raise DataContractError(f"{f}: not a readable Parquet file ({' '.join(str(exc).split())[:160]})") from None
    meta = metadata_from_schema(tables[0].schema)
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")
    return table.replace_schema_metadata(tables[0].schema.metadata) if meta else table


def load_compare_data(source: str | os.PathLike[str], params: dict[str, Any]) -> tuple[CompareData, dict[str, Any]]:
    """Render (flows input) or load (images input) every representation and build the shared split."""
    from pcapvision.imaging import images_to_array, render_flows

    table = _read_table(source)
    stage = metadata_from_schema(table.schema).get("stage")
    target = params["target"]
    per_repr: dict[str, pa.Table] = {}
    flows = None
    is_images = stage == "image" or "image" in table.schema.names
    needed = ("flow_id", "split_group", "image", target) if is_images else ("flow_id", target)
    missing = [c for c in needed if c not in table.schema.names]
    if missing:
        kind = "an images table" if is_images else "a flows table (or an images table)"
        raise DataContractError(f"{source}: not {kind} to compare: missing column(s) {', '.join(missing)}")
    if is_images:
        own = metadata_from_schema(table.schema).get("representation") or "imported"
        if params["reprs"] != [own]:
            log.info("an images table holds one representation (%s): --reprs is ignored", own)
        params["reprs"] = [own]
        per_repr[own] = table
        input_kind = "images"
    else:
        input_kind = "flows"
        flows = table
        for name in params["reprs"]:
            rendered, _ = render_flows(flows, name, dedup=True, group_by=params["group_by"])
            per_repr[name] = rendered
            log.info("%s: %d images from %d flows", name, rendered.num_rows, flows.num_rows)
    # Keep the flows every representation kept (labelled), in one order.
    common: set[str] | None = None
    for t in per_repr.values():
        labelled = t.filter(pc.is_valid(t.column(target)))
        ids = set(labelled.column("flow_id").to_pylist())
        common = ids if common is None else common & ids
    order = sorted(common or ())
    if not order:
        raise DataContractError(f"{source}: no labelled flow is kept by every representation compared")
    first = next(iter(per_repr.values()))
    index_of = {fid: i for i, fid in enumerate(first.column("flow_id").to_pylist())}
    take = np.asarray([index_of[f] for f in order])
    labels = np.asarray(first.column(target).to_pylist(), dtype=object)[take].astype(str)
    groups = np.asarray(first.column("split_group").to_pylist(), dtype=object)[take].astype(str)
    class_names = sorted(set(labels.tolist()))
    if len(class_names) < 2:
        raise DataContractError(f"{source}: the compared rows hold one {target} value only ({class_names})")
    images, payload = {}, {}
    counts = {}
    for name, t in per_repr.items():
        ids = t.column("flow_id").to_pylist()
        pos = {fid: i for i, fid in enumerate(ids)}
        sub = t.take(pa.array([pos[f] for f in order]))
        images[name] = images_to_array(sub)
        pl = sub.column("payload_length") if "payload_length" in sub.schema.names else None
        payload[name] = None if pl is None or pl.null_count == len(pl) else np.asarray(pl.fill_null(0).to_pylist(), np.int64)
        counts[name] = t.num_rows
    features = None
    if flows is not None:
        fpos = {fid: i for i, fid in enumerate(flows.column("flow_id").to_pylist())}
        features = statistics.flow_statistics(flows.select(list(statistics.COLUMNS)).take(pa.array([fpos[f] for f in order])))
    data = CompareData(np.asarray(order), np.asarray([class_names.index(v) for v in labels]), class_names, groups,
                       images, payload, features, rows_per_representation=counts)
    if input_kind == "images":
        data.notes.append("The input is an images table: the per-flow statistics reference needs the flows table "
                          "and is not run.")
    if len(per_repr) > 1:
        data.notes.append(f"{len(order)} flows are kept by every representation compared (of "
                          + ", ".join(f"{n}: {c}" for n, c in counts.items())
                          + " images after each one's dedup and conflict rules); all figures are over these flows.")
    return data, {"input_kind": input_kind, "n_flows": len(order)}


def make_split(data: CompareData, seed: int) -> dict[str, Any]:
    """The one split for every entry: whole groups to train/validation/test (classify's splitter)."""
    from pcapvision.classify import split_indices

    split = split_indices(data.y, data.groups, seed=seed)
    data.split = split
    return {
        "rule": f"StratifiedGroupKFold on split_group (seed {seed}): test ~20%, validation ~10% of the flows, "
                "the same groups for every model, baseline and the reference",
        **{f"n_{k}": int(len(v)) for k, v in split.items()},
        "groups": {k: sorted(set(data.groups[v].tolist())) for k, v in split.items()},
        "class_counts": {k: {c: int((data.y[v] == i).sum()) for i, c in enumerate(data.class_names)} for k, v in split.items()},
    }


def _scores(y: np.ndarray, proba: np.ndarray, class_names: list[str], positive_class: str | None) -> dict[str, Any]:
    from pcapvision.classify import classification_metrics

    m = classification_metrics(y, proba, class_names, positive_class=positive_class)
    out = {"macro_f1": m["macro"]["f1"], "accuracy": m["accuracy"], "roc_auc": m["macro"]["roc_auc"]}
    if "positive" in m:
        out["positive_f1"] = m["positive"]["f1"]
        out["positive_fpr"] = m["positive"]["false_positive_rate"]
    return out


def run_grid(data: CompareData, params: dict[str, Any], *, quiet: bool = False) -> list[dict[str, Any]]:
    """One result per (entry, seed): scores on validation and test, train time, inference rate."""
    from pcapvision.classify import predict_proba, run_baselines, train_model

    tr, va, te = data.split["train"], data.split["validation"], data.split["test"]
    names, k = data.class_names, len(data.class_names)
    pos = params["positive_class"]
    y = data.y
    results: list[dict[str, Any]] = []
    n_jobs = params["seeds"] * (len(params["reprs"]) * (len(params["archs"]) + 1) + (data.features is not None))
    bar = progress(total=n_jobs, desc="compare", unit="fit", quiet=quiet)
    # Every fit builds a new model, so Keras retraces its predict function each time and TensorFlow
    # warns about it; expected here, and noise on the terminal.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    for seed in range(params["seeds"]):
        if data.features is not None:
            t0 = time.perf_counter()
            ref = statistics.fit_reference(data.features[tr], y[tr], seed)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            proba_te = statistics.reference_proba(ref, data.features[te], k)
            infer_s = time.perf_counter() - t0
            results.append({"model": "per-flow statistics + gradient-boosted trees", "kind": "reference",
                            "representation": None, "arch": None, "seed": seed, "what": statistics.DESCRIPTION,
                            "validation": _scores(y[va], statistics.reference_proba(ref, data.features[va], k), names, pos),
                            "test": _scores(y[te], proba_te, names, pos), "train_seconds": fit_s,
                            "inference_per_s": len(te) / infer_s if infer_s > 0 else None})
            bar.update(1)
        for rep in params["reprs"]:
            x = data.images[rep]
            pl = data.payload_length[rep]
            val_rows = run_baselines(x[tr], y[tr], x[va], y[va], names, payload_length_train=None if pl is None else pl[tr],
                                     payload_length_test=None if pl is None else pl[va], seed=seed,
                                     positive_class=pos)
            test_rows = run_baselines(x[tr], y[tr], x[te], y[te], names, payload_length_train=None if pl is None else pl[tr],
                                      payload_length_test=None if pl is None else pl[te], seed=seed,
                                      positive_class=pos)
            for v_row, t_row in zip(val_rows, test_rows):
                results.append({"model": f"{t_row['baseline']} [{rep}]", "kind": "baseline", "representation": rep,
                                "arch": None, "seed": seed, "what": t_row["what"] if t_row["baseline"] != "majority class" else "majority class of the training rows",
                                "validation": _baseline_scores(v_row), "test": _baseline_scores(t_row),
                                "train_seconds": None, "inference_per_s": None})
            bar.update(1)
            for arch in params["archs"]:
                model, history = train_model(x[tr], y[tr], x[va], y[va], arch=arch, epochs=params["epochs"], seed=seed,
                                             n_classes=k)
                t0 = time.perf_counter()
                proba_te = predict_proba(model, x[te])
                infer_s = time.perf_counter() - t0
                results.append({"model": f"{arch} on {rep}", "kind": "model", "representation": rep, "arch": arch,
                                "seed": seed, "what": f"{arch} trained on {rep} images ({history['epochs_run']} epochs, "
                                                      f"best {history['best_epoch']})",
                                "validation": _scores(y[va], predict_proba(model, x[va]), names, pos),
                                "test": _scores(y[te], proba_te, names, pos), "train_seconds": history["train_seconds"],
                                "inference_per_s": len(te) / infer_s if infer_s > 0 else None,
                                "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"]})
                bar.update(1)
                _release(model)
    bar.close()
    return results


def _baseline_scores(row: dict[str, Any]) -> dict[str, Any]:
    out = {"macro_f1": row["macro_f1"], "accuracy": row["accuracy"], "roc_auc": row["macro_roc_auc"]}
    f1 = [v for key, v in row.items() if key.endswith("_f1") and key != "macro_f1"]
    if f1:
        out["positive_f1"] = f1[0]
    return out


def _release(model: Any) -> None:
    import keras

    del model
    keras.backend.clear_session()


__all__ = ["DEFAULT_ARCHS", "DEFAULT_EPOCHS", "DEFAULT_REPRS", "DEFAULT_SEEDS", "CompareData", "check_compare_params",
           "load_compare_data", "make_split", "run_grid"]
