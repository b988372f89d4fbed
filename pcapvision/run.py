"""The main job: captures -> flows -> images -> model -> robustness report, in one call.

Each stage writes its usual artifact under the output directory::

    OUT/flows/            flows table (dataset directory, one part per capture)
    OUT/images.parquet    images table (+ images.parquet.summary.json, preview.png)
    OUT/model/            model.keras, metadata.json, report/ (metrics.json, report.html)
    OUT/robustness/       robustness.json, robustness.html
    OUT/run.json          what ran, what was reused, the headline figures

A stage is skipped when its output exists and was made from the same input (by content hash)
with the same parameters, so re-running after adding one capture redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pcapvision.io import sha256_file, write_json_atomic
from pcapvision.validation import check_choice, check_int, check_positive_int

log = logging.getLogger(__name__)

DEFAULT_CAPTURES = "sample_pcaps"
RUN_RECORD = "run.json"


def _fingerprint(input_hash: str, params: Mapping[str, Any]) -> str:
    blob = json.dumps({"input": input_hash, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


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
    from pcapvision.classify.pipeline import train_images
    from pcapvision.imaging import image_flows
    from pcapvision.imaging.table import dataset_sha256
    from pcapvision.ingest import Labeler, ingest
    from pcapvision.robustness import run_suite

    check_choice("target", target, ("label", "family"))
    check_choice("suite", suite, ("quick", "full", "none"))
    check_positive_int("epochs", epochs)
    check_int("seed", seed, min_value=0)
    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / RUN_RECORD
    previous = _read_previous(record_path) if not force else {}
    record: dict[str, Any] = {"captures": [os.fspath(c) for c in captures], "stages": {}}

    labels_path = Path(labels) if labels is not None else _default_labels(captures)
    if labels_path is None:
        log.warning("no label rules given and no labels.csv beside the captures: flows stay unlabeled")
    labeler = Labeler.from_rules_csv(labels_path) if labels_path is not None else None
    record["labels"] = os.fspath(labels_path) if labels_path is not None else None

    # Ingest is incremental by itself: captures already in the dataset directory are skipped.
    flows_dir = out / "flows"
    log.info("[1/4] ingest %s -> %s", ", ".join(map(os.fspath, captures)), flows_dir)
    summary = ingest(list(captures), flows_dir, labeler=labeler, jobs=jobs, quiet=quiet, force=force)
    record["stages"]["ingest"] = {"output": os.fspath(flows_dir), **summary.to_dict()}
    if summary.files_failed:
        log.warning("%d capture(s) failed to ingest; continuing with the rest", len(summary.files_failed))

    def stage(name: str, output_path: Path, input_hash: str, params: dict[str, Any], action: Callable[[], Any]) -> Any:
        fingerprint = _fingerprint(input_hash, params)
        done = previous.get("stages", {}).get(name, {})
        if output_path.exists() and done.get("fingerprint") == fingerprint:
            log.info("%s: up to date (%s), reused", name, output_path)
            record["stages"][name] = {**done, "reused": True}
            return None
        t0 = time.perf_counter()
        result = action()
        record["stages"][name] = {"output": os.fspath(output_path), "fingerprint": fingerprint, "reused": False,
                                  "seconds": round(time.perf_counter() - t0, 2)}
        return result

    images_path = out / "images.parquet"
    log.info("[2/4] image (%s) -> %s", representation, images_path)
    # The labeler hash too: flows relabelled by new rules make every later stage stale.
    image_params = {"representation": representation, "labeler_sha256": labeler.sha256() if labeler else None}
    result = stage("image", images_path, dataset_sha256(flows_dir), image_params,
                   lambda: image_flows(flows_dir, images_path, representation, preview=out / "preview.png", quiet=quiet))
    if result is not None:
        record["stages"]["image"]["summary"] = result.to_dict()

    model_dir = out / "model"
    log.info("[3/4] train %s on %s (%s) -> %s", arch, images_path, target, model_dir)
    train_params = {"target": target, "arch": arch, "epochs": epochs, "seed": seed}
    result = stage("train", model_dir / "metadata.json", sha256_file(images_path), train_params,
                   lambda: train_images(images_path, model_dir, target=target, arch=arch, epochs=epochs, seed=seed))
    if result is not None:
        record["stages"]["train"]["test"] = {k: result["test"][k] for k in ("accuracy", "macro") if k in result["test"]}
        record["stages"]["train"]["baseline_warnings"] = result.get("baseline_warnings", [])

    if suite != "none":
        robustness_dir = out / "robustness"
        log.info("[4/4] robustness (%s suite) -> %s", suite, robustness_dir)
        model_hash = sha256_file(model_dir / "model.keras")
        stage("robustness", robustness_dir / "robustness.json", model_hash, {"suite": suite, "seed": seed},
              lambda: run_suite(model_dir, images_path, robustness_dir, suite, flows=flows_dir, seed=seed))

    record["seconds"] = round(time.perf_counter() - started, 2)
    record["reports"] = {
        "preview": os.fspath(out / "preview.png"),
        "model": os.fspath(model_dir / "report" / "report.html"),
        "robustness": os.fspath(out / "robustness" / "robustness.html") if suite != "none" else None,
    }
    write_json_atomic(record_path, record)
    return record


def _read_previous(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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
