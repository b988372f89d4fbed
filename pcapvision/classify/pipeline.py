"""End-to-end classify runs: train on MNIST or an images table, evaluate, write the model report.

These are what the CLI calls. Each returns the ``metrics.json`` record it wrote.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pcapvision.classify import plots
from pcapvision.classify.artifact import (
    SPLIT_MANIFEST_FILE,
    load_model,
    save_model,
    staged_model_directory,
)
from pcapvision.classify.datasets import (
    ImagesDataset,
    _stratified_holdout,
    load_images_dataset,
    load_mnist,
    reload_mnist,
    split_indices,
)
from pcapvision.classify.evaluate import (
    BASELINE_MARGIN_POINTS,
    classification_metrics,
    compare_with_baselines,
    curves,
    model_positive_class,
    predict_labels,
    resolve_positive_class,
    run_baselines,
)
from pcapvision.classify.model import DEFAULT_LEARNING_RATE, OPTIMIZERS
from pcapvision.classify.predict import check_representation, predict_proba
from pcapvision.classify.rows import find_training_table, resolve_test_rows, training_table_record
from pcapvision.classify.train import train_model
from pcapvision.errors import DataContractError, InputNotFoundError, ModelFormatError
from pcapvision.io import make_metadata, sha256_file, write_json_atomic, write_parquet_atomic
from pcapvision.outputs import replace_files_together
from pcapvision.report import HtmlReport
from pcapvision.validation import check_int, check_number, check_positive_int

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def _training_params(arch: str, epochs: int, batch_size: int, seed: int, learning_rate: float | None,
                     patience: int, validation_fraction: float, threshold: float, **extra: Any) -> dict[str, Any]:
    return {
        "arch": arch, "epochs": check_positive_int("epochs", epochs), "batch_size": check_positive_int("batch_size", batch_size),
        "seed": check_int("seed", seed, min_value=0),
        "learning_rate": DEFAULT_LEARNING_RATE.get(arch) if learning_rate is None else learning_rate,
        "optimizer": OPTIMIZERS.get(arch), "patience": check_int("patience", patience, min_value=0),
        "validation_fraction": check_number("validation_fraction", validation_fraction, min_value=0, max_value=0.5, min_inclusive=False),
        "threshold": check_number("threshold", threshold, min_value=0, max_value=1), **extra,
    }


# --- MNIST ---------------------------------------------------------------------------------------


def train_mnist(
    model_dir: str | os.PathLike[str],
    *,
    mnist_file: str | os.PathLike[str] | None = None,
    arch: str = "cnn",
    epochs: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    learning_rate: float | None = None,
    patience: int = 3,
    validation_fraction: float = 0.1,
    allow_download: bool = True,
) -> dict[str, Any]:
    """Train ``arch`` on MNIST (see :func:`load_mnist` for sources), evaluate on its test split,
    save the model directory with its report; return the metrics record."""
    params = _training_params(arch, epochs, batch_size, seed, learning_rate, patience, validation_fraction, 0.5)
    x_train, y_train, x_test, y_test, info = load_mnist(mnist_file, seed=seed, allow_download=allow_download)
    with staged_model_directory(model_dir) as stage:
        fit_idx, val_idx = _stratified_holdout(y_train, validation_fraction, seed)
        class_names = [str(d) for d in range(10)]
        model, history = train_model(
            x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx], arch=arch, epochs=epochs,
            batch_size=batch_size, seed=seed, learning_rate=learning_rate, patience=patience, n_classes=10,
            class_names=class_names,
        )
        split = {
            "rule": f"test: {info['split']}; validation: stratified {validation_fraction:.0%} of train (seed {seed})",
            "n_train": len(fit_idx), "n_validation": len(val_idx), "n_test": len(y_test),
        }
        notes = []
        if info["is_sample"]:
            notes.append(
                f"Trained and tested on a {info['n_train'] + info['n_test']}-digit MNIST sample ({info['split']}), not "
                "full MNIST: accuracy here is not comparable with published full-MNIST results."
            )
        record = _finish(
            model_dir, stage, model, history, params, class_names=class_names, target="digit", dataset=info,
            split=split, x_train=x_train[fit_idx], y_train=y_train[fit_idx], x_test=x_test, y_test=y_test,
            payload_train=None, payload_test=None, representation=None, representation_params=None,
            images_schema=None, notes=notes, title=f"pcapvision model report: {arch.upper()} on MNIST", positive_class=None,
        )
    return record


# --- images tables -------------------------------------------------------------------------------


def train_images(
    images_path: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    *,
    target: str = "label",
    arch: str = "cnn",
    epochs: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    learning_rate: float | None = None,
    patience: int = 3,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    threshold: float = 0.5,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """Train on an images table with a stratified, group-aware train/validation/test split, save
    the model directory (with the split manifest) and its report; return the metrics record.

    Two-class tables need a positive class: ``positive_class``, or a class named ``malicious``.
    """
    params = _training_params(arch, epochs, batch_size, seed, learning_rate, patience, validation_fraction,
                              threshold, test_fraction=test_fraction, target=target, positive_class=positive_class)
    data = load_images_dataset(images_path, target=target)
    class_names = sorted(set(data.labels.tolist()))
    if len(class_names) < 2:
        raise DataContractError(f"{images_path}: only one {target} value ({class_names}); a classifier needs at least two")
    with staged_model_directory(model_dir) as stage:
        positive = resolve_positive_class(class_names, positive_class)
        y = np.searchsorted(np.asarray(class_names), data.labels)
        split = split_indices(y, data.split_group, seed=seed, test_fraction=test_fraction,
                              validation_fraction=validation_fraction, class_names=class_names)
        tr, va, te = split["train"], split["validation"], split["test"]
        model, history = train_model(
            data.x[tr], y[tr], data.x[va], y[va], arch=arch, epochs=epochs, batch_size=batch_size, seed=seed,
            learning_rate=learning_rate, patience=patience, n_classes=len(class_names), class_names=class_names,
        )
        manifest = _write_split_manifest(stage, data, split)
        groups = {name: sorted(set(data.split_group[idx].tolist())) for name, idx in split.items()}
        split_record = {
            "rule": f"StratifiedGroupKFold on split_group (seed {seed}); test ~{test_fraction:.0%}, validation ~{validation_fraction:.0%}",
            **{f"n_{name}": int(len(idx)) for name, idx in split.items()},
            "groups": groups, "manifest_file": SPLIT_MANIFEST_FILE, "manifest_sha256": sha256_file(manifest),
            "duplicates_dropped": data.n_duplicates_dropped, "conflicting_duplicates_dropped": data.n_conflicts_dropped,
        }
        dataset = {"name": "images", "path": training_table_record(images_path), "target": target, "data_sha256": data.data_sha256,
                   "n_images": len(data), "class_counts": {c: int((data.labels == c).sum()) for c in class_names}}
        record = _finish(
            model_dir, stage, model, history, params, class_names=class_names, target=target, dataset=dataset, split=split_record,
            x_train=data.x[tr], y_train=y[tr], x_test=data.x[te], y_test=y[te],
            payload_train=None if data.payload_length is None else data.payload_length[tr],
            payload_test=None if data.payload_length is None else data.payload_length[te],
            representation=data.representation, representation_params=data.params, images_schema=data.schema,
            notes=[], title=f"pcapvision model report: {arch.upper()} on {Path(images_path).name} ({target})",
            positive_class=positive,
        )
    return record


def _write_split_manifest(model_dir: str | os.PathLike[str], data: ImagesDataset, split: Mapping[str, np.ndarray]) -> Path:
    names = np.empty(len(data), dtype=object)
    for name, idx in split.items():
        names[idx] = name
    used = names != None  # noqa: E711 - elementwise comparison on an object array
    table = pa.table({
        "flow_id": data.flow_id[used], "split_group": data.split_group[used], "image_sha256": data.image_sha256[used],
        "label": data.labels[used], "split": names[used].astype(str),
    })
    return write_parquet_atomic(table, Path(model_dir) / SPLIT_MANIFEST_FILE,
                                make_metadata("classify", {"what": "split manifest"}))


# --- shared tail: metrics, baselines, artifact, report -------------------------------------------


def _finish(model_dir, stage, model, history, params, *, class_names, target, dataset, split, x_train, y_train, x_test,
            y_test, payload_train, payload_test, representation, representation_params, images_schema, notes, title,
            positive_class):
    proba = predict_proba(model, x_test)
    metrics = classification_metrics(y_test, proba, class_names, threshold=params["threshold"], positive_class=positive_class)
    baselines = run_baselines(x_train, y_train, x_test, y_test, class_names, payload_length_train=payload_train,
                              payload_length_test=payload_test, seed=params["seed"], positive_class=positive_class)
    warnings = compare_with_baselines(metrics, baselines)
    for w in warnings:
        log.warning("%s", w)
    metadata = make_metadata(
        "classify", params, class_names=list(class_names), target=target,
        positive_class=positive_class,
        input_shape=list(x_train.shape[1:]), representation=representation, representation_params=representation_params,
        images_schema=images_schema, dataset=dataset, data_sha256=dataset["data_sha256"], split=split,
        history=history, metrics={"test": _headline(metrics)}, baselines=baselines,
    )
    save_model(model, stage, metadata)
    record = {"model_dir": str(model_dir), "data": dataset, "split": {k: v for k, v in split.items() if k != "groups"},
              "test": metrics, "baselines": baselines, "baseline_warnings": warnings, "notes": notes, "history": history}
    write_model_report(Path(stage) / REPORT_DIR, record, title=title, x_test=x_test, y_test=y_test, proba=proba,
                       class_names=class_names, positive_class=positive_class)
    return record


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    head = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro"]["f1"], "macro_roc_auc": metrics["macro"]["roc_auc"],
            "macro_pr_auc": metrics["macro"]["pr_auc"], "n_samples": metrics["n_samples"]}
    if "positive" in metrics:
        head["positive"] = {k: metrics["positive"][k] for k in ("class", "precision", "recall", "f1", "false_positive_rate", "threshold")}
    return head


def write_model_report(out_dir: str | os.PathLike[str], record: Mapping[str, Any], *, title: str, x_test: np.ndarray,
                       y_test: np.ndarray, proba: np.ndarray, class_names: Sequence[str],
                       positive_class: str | None = None) -> Path:
    """Write ``out_dir/metrics.json`` and the self-contained ``out_dir/report.html``; return the HTML path."""
    out = Path(out_dir)
    m = record["test"]
    rep = HtmlReport(title)
    for note in record.get("notes", []):
        rep.note(note)
    for warning in record.get("baseline_warnings", []):
        rep.warning(warning)

    rep.heading("Data and split")
    data = record.get("data", {})
    rep.table([{"item": k, "value": v if not isinstance(v, (dict, list)) else str(v)} for k, v in data.items()])
    split = record.get("split", {})
    rep.table([{"item": k, "value": v if not isinstance(v, (dict, list)) else str(v)} for k, v in split.items()])

    rep.heading("Test metrics")
    summary = {"samples": m["n_samples"], "accuracy": m["accuracy"], "macro precision": m["macro"]["precision"],
               "macro recall": m["macro"]["recall"], "macro F1": m["macro"]["f1"],
               "macro ROC-AUC": m["macro"]["roc_auc"] if m["macro"]["roc_auc"] is not None else "n/a",
               "macro PR-AUC": m["macro"]["pr_auc"] if m["macro"]["pr_auc"] is not None else "n/a"}
    rep.table([summary])
    if "positive" in m:
        pos = m["positive"]
        rep.paragraph(
            f"Positive class '{pos['class']}' at operating threshold p >= {pos['threshold']:g}: precision {pos['precision']:.4f}, "
            f"recall {pos['recall']:.4f}, F1 {pos['f1']:.4f}, false-positive rate {pos['false_positive_rate'] or 0:.4f}."
        )
    rep.table([{"class": name, **{k: ("n/a" if v is None else v) for k, v in stats.items()}} for name, stats in m["per_class"].items()],
              caption="Per class (FPR: one vs rest at the operating point; most confused with: the commonest wrong prediction)")

    if record.get("baselines"):
        rep.heading("Trivial baselines (same split)")
        model_row = {"baseline": "THIS MODEL", "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"],
                     "macro_roc_auc": m["macro"]["roc_auc"]}
        if "positive" in m:
            model_row[f"{m['positive']['class']}_f1"] = m["positive"]["f1"]
        rows = [model_row] + [dict(r) for r in record["baselines"]]
        rep.table([{k: ("n/a" if v is None else v) for k, v in r.items()} for r in rows])
        if not record.get("baseline_warnings"):
            rep.paragraph(f"Every baseline is more than {BASELINE_MARGIN_POINTS:g} points below the model in macro-F1.")

    history = record.get("history") or {}
    if history.get("loss"):
        rep.heading("Training curves")
        rep.figure(plots.training_curves(history), caption=(
            f"{history['epochs_run']} epochs run; weights restored from epoch {history['best_epoch']} (lowest validation loss)"))
    rep.heading("Confusion matrix (test)")
    rep.figure(plots.confusion_matrix(m["confusion_matrix"], class_names), caption="rows: true class; columns: predicted class")
    pts = curves(y_test, proba, class_names, positive_class)
    if pts:
        rep.heading("ROC and precision-recall curves (test)")
        rep.figure(plots.roc_pr_curves(pts, m))
    rep.heading("Sample inputs per class (test)")
    rep.figure(plots.samples_per_class(x_test, y_test, class_names), caption="random test inputs, one row per class")
    threshold = 0.5 if m.get("operating_threshold") is None else m["operating_threshold"]
    fig, rows = plots.worst_misclassified(x_test, y_test, proba, class_names,
                                          y_pred=predict_labels(proba, class_names, threshold, positive_class))
    rep.heading("Worst misclassified (test)")
    if fig is None:
        rep.paragraph("No test example is misclassified.")
    else:
        rep.figure(fig, caption="the wrong predictions made with the highest confidence: true→predicted, p(predicted)")
        rep.table(rows)
    # metrics.json and report.html are replaced together: never one new and the other old.
    replace_files_together(out, {"metrics.json": lambda tmp: write_json_atomic(tmp, record), "report.html": rep.save})
    log.info("wrote %s", out / "report.html")
    return out / "report.html"


# --- evaluate ------------------------------------------------------------------------------------


def evaluate(
    model_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model on ``data`` and write ``metrics.json`` + ``report.html`` to ``out_dir``.

    ``data`` is ``mnist`` (the model's own MNIST test split), or an images table whose test rows
    :func:`~pcapvision.classify.rows.resolve_test_rows` decides: rows the model saw in training
    or validation are never scored. The baselines are fitted on the model's training split, taken
    from its training table wherever that is found unchanged (by content hash).
    ``positive_class`` overrides the one stored with a two-class model.
    Default ``out_dir``: ``MODEL_DIR/evaluation-<data name>``.
    """
    if str(data) != "mnist" and not Path(data).exists():  # fail before TensorFlow starts
        raise InputNotFoundError(f"{data}: no such file or directory")
    model, metadata = load_model(model_dir)
    class_names = list(metadata["class_names"])
    positive = model_positive_class(metadata, positive_class)
    thr = float(metadata.get("params", {}).get("threshold", 0.5)) if threshold is None else check_number("threshold", threshold, min_value=0, max_value=1)
    name = "mnist" if str(data) == "mnist" else Path(data).name.split(".")[0]
    out = Path(out_dir) if out_dir is not None else Path(model_dir) / f"evaluation-{name}"
    notes: list[str] = []
    payload_train = payload_test = None
    if str(data) == "mnist":
        info = metadata.get("dataset") or {}
        if info.get("name") != "mnist":
            raise ModelFormatError(f"{model_dir}: the model was not trained on MNIST; give an images table")
        x_train, y_train, x_test, y_test = reload_mnist(info)
        fit_idx, _ = _stratified_holdout(y_train, float(metadata["params"]["validation_fraction"]), int(info["seed"]))
        x_train, y_train = x_train[fit_idx], y_train[fit_idx]
        dataset, split = dict(info), {"rule": metadata.get("split", {}).get("rule"), "n_test": len(y_test)}
    else:
        if metadata.get("representation") is None:
            raise ModelFormatError(f"{model_dir}: an MNIST model cannot be evaluated on the images table {data}; "
                                   "evaluate it on 'mnist'")
        target = metadata.get("target", "label")
        images = load_images_dataset(data, target=target)
        check_representation(metadata, images.schema, str(data))
        known = np.isin(images.labels, class_names)
        if not known.all():
            unknown = sorted(set(images.labels[~known].tolist()))
            notes.append(f"{int((~known).sum())} images with {target} values unknown to the model ({unknown}) were left out.")
        rows = resolve_test_rows(model_dir, metadata, images)
        if rows.n_excluded_total and not rows.same_table:
            notes.append(f"{rows.n_excluded['train']} rows of {Path(data).name} were in the model's training split and "
                         f"{rows.n_excluded['validation']} in its validation split: they are not scored.")
        test_images = images.subset(rows.test[known[rows.test]])
        train_table, why = find_training_table(model_dir, metadata, (images,))
        train_data = None
        if train_table is not None:
            tr = rows.train if train_table is images else resolve_test_rows(model_dir, metadata, train_table).train
            sub = train_table.subset(tr)
            train_data = (sub, np.asarray([class_names.index(v) for v in sub.labels], dtype=np.int64))
        else:
            notes.append(f"Baselines skipped: {why}.")
        y_test = np.asarray([class_names.index(v) for v in test_images.labels], dtype=np.int64)
        split = {**rows.describe(), "n_test": len(y_test)}
        x_test = test_images.x
        payload_test = test_images.payload_length
        if train_data is not None:
            x_train, y_train = train_data[0].x, train_data[1]
            payload_train = train_data[0].payload_length
        else:
            x_train = y_train = None
        dataset = {"name": "images", "path": str(data), "target": target, "data_sha256": images.data_sha256}
    if len(y_test) == 0:
        raise DataContractError(f"{data}: no test images to evaluate (every row was seen by the model in training "
                                "or validation, or has a class it does not know)")
    proba = predict_proba(model, x_test)
    metrics = classification_metrics(y_test, proba, class_names, threshold=thr, positive_class=positive)
    baselines: list[dict[str, Any]] = []
    if x_train is not None:
        baselines = run_baselines(x_train, y_train, x_test, y_test, class_names, payload_length_train=payload_train,
                                  payload_length_test=payload_test if payload_train is not None else None,
                                  seed=int(metadata.get("params", {}).get("seed", 0)), positive_class=positive)
    warnings = compare_with_baselines(metrics, baselines)
    for w in warnings:
        log.warning("%s", w)
    record = {"model_dir": str(model_dir), "data": dataset, "split": split, "test": metrics, "baselines": baselines,
              "baseline_warnings": warnings, "notes": notes, "history": metadata.get("history")}
    write_model_report(out, record, title=f"pcapvision evaluation: {Path(model_dir).name} on {name}", x_test=x_test,
                       y_test=y_test, proba=proba, class_names=class_names, positive_class=positive)
    return record
