"""The main job: captures -> flows -> images -> model -> robustness report, in one call.

Each stage writes its usual artifact under the output directory::

    OUT/flows/            flows table (dataset directory, one part per capture)
    OUT/images.parquet    images table (+ images.parquet.summary.json, preview.png)
    OUT/model/            model.keras, metadata.json, report/ (metrics.json, report.html)
    OUT/robustness/       robustness.json, robustness.html
    OUT/run.json          what ran, what was reused, the headline figures

A stage is reused when its output's own metadata says it was made from the same inputs (by
content hash) with the same parameters, and ``run.json`` records that the stage finished (see
:mod:`pcapvision.reuse`); re-running after adding one capture redoes only what changed, and a
stage killed midway is redone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pcapvision.errors import PcapvisionError
from pcapvision.reuse import RunRecord, check_images, check_model, check_robustness, run_stage
from pcapvision.validation import check_choice, check_int, check_positive_int

log = logging.getLogger(__name__)

DEFAULT_CAPTURES = "sample_pcaps"
RUN_RECORD = "run.json"
METADATA_FILE = "metadata.json"


def _default_labels(captures: Sequence[str | os.PathLike[str]]) -> Path | None:
    """``labels.csv`` beside the captures when exactly one directory is given (the sample layout)."""
    if len(captures) == 1 and Path(captures[0]).is_dir():
        candidate = Path(captures[0]) / "labels.csv"
        if candidate.is_file():
            return candidate
    return None


def run_pipeline(
    captures: Sequence[str | os.PathLike[str]] = (DEFAULT_CAPTURES,),
    output: str | os.PathLike[str] = "out",
    *,
    labels: str | os.PathLike[str] | None = None,
    representation: str = "payload",
    target: str = "label",
    arch: str = "cnn",
    epochs: int = 20,
    suite: str = "quick",
    seed: int = 0,
    jobs: int = 1,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run every stage on ``captures`` and return the run record (also written to ``OUT/run.json``).

    ``labels``: a label rules CSV; by default ``labels.csv`` inside the single capture directory.
    ``suite``: the robustness suite (``quick``, ``full``) or ``none`` to stop after training.
    """
    from pcapvision.classify import load_images_dataset, read_metadata, train_images
    from pcapvision.imaging import dataset_sha256, get_representation, image_flows
    from pcapvision.ingest import Labeler, ingest
    from pcapvision.robustness import run_suite, suite_config

    check_choice("target", target, ("label", "family"))
    check_choice("suite", suite, ("quick", "full", "none"))
    check_positive_int("epochs", epochs)
    check_int("seed", seed, min_value=0)
    rep = get_representation(representation, None)
    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = Path(labels) if labels is not None else _default_labels(captures)
    record = RunRecord(out / RUN_RECORD, {
        "captures": [os.fspath(c) for c in captures],
        "labels": os.fspath(labels_path) if labels_path is not None else None,
    }, fresh=force)
    record.save()

    if labels_path is None:
        log.warning("no label rules given and no labels.csv beside the captures: flows stay unlabeled")
    labeler = Labeler.from_rules_csv(labels_path) if labels_path is not None else None

    # Ingest is incremental by itself: captures already in the dataset directory are skipped.
    flows_dir = out / "flows"
    log.info("[1/4] ingest %s -> %s", ", ".join(map(os.fspath, captures)), flows_dir)
    summary = ingest(list(captures), flows_dir, labeler=labeler, jobs=jobs, quiet=quiet, force=force)
    record.finish("ingest", {"output": os.fspath(flows_dir), **summary.to_dict()})
    if summary.files_failed:
        log.warning("%d capture(s) failed to ingest; continuing with the rest", len(summary.files_failed))

    images_path = out / "images.parquet"
    log.info("[2/4] image (%s) -> %s", representation, images_path)
    flows_sha = dataset_sha256(flows_dir)
    image_params = {"representation": rep.name, "representation_params": rep.params, "dedup": True,
                    "mask_tls_sni": False, "group_by": "capture"}
    _, result = run_stage(
        record, "image", images_path, params=image_params, force=force,
        # The labeler hash too: flows relabelled by new rules make every later stage stale.
        inputs={"flows_sha256": flows_sha, "labeler_sha256": labeler.sha256() if labeler else None},
        check=lambda: check_images(images_path, flows_sha, image_params),
        action=lambda: image_flows(flows_dir, images_path, representation, preview=out / "preview.png", quiet=quiet))
    if result is not None:
        record.finish("image", {**record.data["stages"]["image"], "summary": result.to_dict()})

    model_dir = out / "model"
    log.info("[3/4] train %s on %s (%s) -> %s", arch, images_path, target, model_dir)
    images_sha = load_images_dataset(images_path, target=target).data_sha256
    train_params = {"target": target, "arch": arch, "epochs": epochs, "seed": seed}
    _, result = run_stage(
        record, "train", model_dir / METADATA_FILE, inputs={"images_data_sha256": images_sha}, params=train_params,
        force=force, check=lambda: check_model(model_dir, _metadata_or_none(read_metadata, model_dir), images_sha, train_params),
        action=lambda: train_images(images_path, model_dir, target=target, arch=arch, epochs=epochs, seed=seed))
    if result is not None:
        record.finish("train", {**record.data["stages"]["train"],
                                "test": {k: result["test"][k] for k in ("accuracy", "macro") if k in result["test"]},
                                "baseline_warnings": result.get("baseline_warnings", [])})

    if suite != "none":
        robustness_dir = out / "robustness"
        log.info("[4/4] robustness (%s suite) -> %s", suite, robustness_dir)
        model_sha = read_metadata(model_dir)["model_sha256"]
        suite_params = {"suite": suite, "seed": seed, "config": asdict(suite_config(suite))}
        report_json = robustness_dir / "robustness.json"
        run_stage(
            record, "robustness", report_json, params=suite_params, force=force,
            inputs={"model_sha256": model_sha, "images_data_sha256": images_sha, "flows_sha256": flows_sha},
            check=lambda: check_robustness(report_json, model_sha, images_sha, suite_params),
            action=lambda: run_suite(model_dir, images_path, robustness_dir, suite, flows=flows_dir, seed=seed))

    record.data["seconds"] = round(time.perf_counter() - started, 2)
    record.data["reports"] = {
        "preview": os.fspath(out / "preview.png"),
        "model": os.fspath(model_dir / "report" / "report.html"),
        "robustness": os.fspath(out / "robustness" / "robustness.html") if suite != "none" else None,
    }
    record.save()
    return record.data


def _metadata_or_none(read: Callable[[Path], dict[str, Any]], model_dir: Path) -> dict[str, Any] | None:
    try:
        return read(model_dir)
    except PcapvisionError:
        return None


def format_run(record: Mapping[str, Any]) -> str:
    """A short human summary of a run record."""
    lines = [f"pcapvision run finished in {record.get('seconds', 0):.1f} s"]
    for name, info in record.get("stages", {}).items():
        seconds = info.get("seconds")
        state = "reused" if info.get("reused") else (f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
        lines.append(f"  {name:<11} {info.get('output', '')}  ({state})")
    test = record.get("stages", {}).get("train", {}).get("test")
    if test:
        macro = test.get("macro", {})
        lines.append(f"  test accuracy {test.get('accuracy', float('nan')):.4f}, macro F1 {macro.get('f1', float('nan')):.4f}")
    for warning in record.get("stages", {}).get("train", {}).get("baseline_warnings", []):
        lines.append(f"  NOTE: {warning}")
    for name, path in record.get("reports", {}).items():
        if path:
            lines.append(f"  {name + ':':<11} {path}")
    return "\n".join(lines)
