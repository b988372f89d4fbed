"""The main job: captures -> flows -> images -> traffic model, beside an MNIST model trained the
same way, both evaluated and attacked, and one report.

Each stage writes its usual artifact under the output directory::

    OUT/flows/               flows table (dataset directory, one part per capture)
    OUT/images.parquet       images table (+ images.parquet.summary.json, preview.png)
    OUT/model/               traffic model: model.keras, metadata.json, report/ (metrics.json, report.html)
    OUT/mnist-model/         the MNIST proof of concept: the plain CNN, same training function
    OUT/robustness/          robustness.json, robustness.html of the traffic model
    OUT/mnist-robustness/    the same for the MNIST model
    OUT/report.html          everything above on one self-contained page
    OUT/run.json             the effective configuration, what ran, what was reused, headline figures

A stage is reused when its output's own metadata says it was made from the same inputs (by
content hash) with the same parameters, and ``run.json`` records that the stage finished (see
:mod:`pcapvision.reuse`); re-running after adding one capture redoes only what changed, and a
stage killed midway is redone. Parameters come from :mod:`pcapvision.config`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from pcapvision import __version__
from pcapvision.config import SUITE_SIZES, apply_overrides, default_config
from pcapvision.errors import CaptureFormatError, InputNotFoundError, PcapvisionError
from pcapvision.reuse import RunRecord, check_images, check_model, check_robustness, run_stage

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
REPORT_FILE = "report.html"
METADATA_FILE = "metadata.json"
LOCK_FILE = ".run.lock"
STAGES = ("ingest", "image", "train", "mnist-train", "robustness", "mnist-robustness", "report")


def _default_labels(captures: Sequence[str | os.PathLike[str]]) -> Path | None:
    """``labels.csv`` beside the captures when exactly one directory is given (the sample layout)."""
    if len(captures) == 1 and Path(captures[0]).is_dir():
        candidate = Path(captures[0]) / "labels.csv"
        if candidate.is_file():
            return candidate
    return None


def _metadata_or_none(read: Callable[[Path], dict[str, Any]], model_dir: Path) -> dict[str, Any] | None:
    try:
        return read(model_dir)
    except PcapvisionError:
        return None


def run_pipeline(
    captures: Sequence[str | os.PathLike[str]] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    force: bool = False,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run every stage and return the run record (also written to ``OUT/run.json``).

    ``config``: a configuration from :func:`pcapvision.config.load_config` (default: the
    defaults). ``captures``, ``output`` and ``options`` (the names of
    :data:`pcapvision.config.OPTIONS`: ``epochs``, ``suite``, ``mnist``...) override it.
    ``force`` redoes every stage.
    """
    from pcapvision.lock import exclusive_lock

    cfg = apply_overrides(config if config is not None else default_config(),
                          {"captures": None if captures is None else list(captures), "output": output, **options})
    out = Path(cfg["run"]["output"])
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK_FILE, what="pcapvision run"):
        return _Run(cfg, out, force=force, quiet=quiet).execute()


class _Run:
    """One execution of the main job (the stages in order; each decides reuse for itself)."""

    def __init__(self, cfg: dict[str, dict[str, Any]], out: Path, *, force: bool, quiet: bool) -> None:
        self.cfg, self.out, self.force, self.quiet = cfg, out, force, quiet
        self.seed = cfg["run"]["seed"]
        captures = cfg["run"]["captures"]
        if not captures:
            raise InputNotFoundError("no captures given: name capture files or directories (or use the default sample_pcaps)")
        labels = cfg["run"]["labels"]
        self.labels_path = Path(labels) if labels else _default_labels(captures)
        self.record = RunRecord(out / RUN_RECORD, {
            "config": cfg, "captures": list(captures),
            "labels": os.fspath(self.labels_path) if self.labels_path is not None else None,
        }, fresh=force)
        self.flows_dir = out / "flows"
        self.images_path = out / "images.parquet"
        self.model_dir = out / "model"
        self.mnist_dir = out / "mnist-model"

    def _stage(self, name: str, artifact: Path, **kw: Any) -> tuple[bool, Any]:
        return run_stage(self.record, name, artifact, force=self.force, **kw)

    def _note(self, name: str, **extra: Any) -> None:
        self.record.finish(name, {**self.record.data["stages"][name], **extra})

    def execute(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.record.save()
        suite = self.cfg["robustness"]["suite"]
        mnist = self.cfg["mnist"]["enabled"]
        steps = 3 + mnist + (suite != "none") * (1 + mnist)
        self.ingest(1, steps)
        self.image(2, steps)
        images_sha = self.train_traffic(3, steps)
        mnist_sha = self.train_mnist(4, steps) if mnist else None
        if suite != "none":
            self.robustness(4 + mnist, steps, "robustness", self.model_dir, self.images_path, images_sha)
            if mnist:
                self.robustness(steps, steps, "mnist-robustness", self.mnist_dir, "mnist", mnist_sha)
        self.report()
        self.record.data["seconds"] = round(time.perf_counter() - started, 2)
        self.record.data["reports"] = self._reports(suite, mnist)
        self.record.save()
        return self.record.data

    def _reports(self, suite: str, mnist: bool) -> dict[str, str | None]:
        reports = {"report": self.out / REPORT_FILE, "preview": self.out / "preview.png",
                   "model": self.model_dir / "report" / "report.html",
                   "robustness": self.out / "robustness" / "robustness.html" if suite != "none" else None,
                   "mnist model": self.mnist_dir / "report" / "report.html" if mnist else None,
                   "mnist robustness": self.out / "mnist-robustness" / "robustness.html" if mnist and suite != "none" else None}
        return {k: None if v is None else os.fspath(v) for k, v in reports.items()}

    # --- stages ------------------------------------------------------------------------------

    def ingest(self, step: int, steps: int) -> None:
        from pcapvision.executor import ingest_captures
        from pcapvision.ingest import IngestOptions, Labeler

        captures = self.cfg["run"]["captures"]
        if self.labels_path is None:
            log.warning("no label rules given and no labels.csv beside the captures: flows stay unlabeled")
        self.labeler = labeler = Labeler.from_rules_csv(self.labels_path) if self.labels_path is not None else None
        # Ingest is incremental by itself: captures already in the dataset directory are skipped.
        log.info("[%d/%d] ingest %s -> %s", step, steps, ", ".join(captures), self.flows_dir)
        summary = ingest_captures(captures, self.flows_dir, IngestOptions(**self.cfg["ingest"]), labeler=labeler,
                                  executor=self.cfg["run"]["executor"], scheduler=self.cfg["run"]["scheduler"] or None,
                                  jobs=self.cfg["run"]["jobs"], quiet=self.quiet, force=self.force)
        self.record.finish("ingest", {"output": os.fspath(self.flows_dir), **summary.to_dict()})
        usable = summary.files_ok + summary.files_skipped_already_ingested
        if summary.files_failed and not usable:
            raise CaptureFormatError(
                f"every capture failed to ingest ({len(summary.files_failed)} of {len(summary.files_failed)}); "
                "nothing to image (each failure is listed above)")
        if summary.files_failed:
            log.warning("%d capture(s) failed to ingest; continuing with the rest", len(summary.files_failed))

    def image(self, step: int, steps: int) -> None:
        from pcapvision.executor import image_captures
        from pcapvision.imaging import dataset_sha256, get_representation

        c = self.cfg["image"]
        rep = get_representation(c["representation"], c["params"] or None)
        log.info("[%d/%d] image (%s) -> %s", step, steps, rep.name, self.images_path)
        flows_sha = dataset_sha256(self.flows_dir)
        params = {"representation": rep.name, "representation_params": rep.params, "dedup": c["dedup"],
                  "mask_tls_sni": c["mask_tls_sni"], "group_by": c["group_by"]}
        self.flows_sha = flows_sha
        _, result = self._stage(
            "image", self.images_path, params=params,
            # The labeler hash too: flows relabelled by new rules make every later stage stale.
            inputs={"flows_sha256": flows_sha, "labeler_sha256": self.labeler.sha256() if self.labeler else None},
            check=lambda: check_images(self.images_path, flows_sha, params),
            action=lambda: image_captures(
                self.flows_dir, self.images_path, rep.name, rep.params, dedup=c["dedup"], mask_tls_sni=c["mask_tls_sni"],
                group_by=c["group_by"], preview=self.out / "preview.png", executor=self.cfg["run"]["executor"],
                scheduler=self.cfg["run"]["scheduler"] or None, jobs=self.cfg["run"]["jobs"], quiet=self.quiet))
        if result is not None:
            self._note("image", summary=result.to_dict())

    def _train_kwargs(self, epochs: int) -> dict[str, Any]:
        t = self.cfg["train"]
        return {"arch": t["arch"], "epochs": epochs, "batch_size": t["batch_size"], "seed": self.seed,
                "learning_rate": t["learning_rate"] or None, "patience": t["patience"],
                "validation_fraction": t["validation_fraction"]}

    def _train_params(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        # As train stores them in metadata.json (learning_rate None means the optimizer's default).
        return {k: v for k, v in kwargs.items() if k != "learning_rate" or v is not None}

    def train_traffic(self, step: int, steps: int) -> str:
        from pcapvision.classify import load_images_dataset, read_metadata, train_images

        t = self.cfg["train"]
        log.info("[%d/%d] train %s on %s (%s) -> %s", step, steps, t["arch"], self.images_path, t["target"], self.model_dir)
        images_sha = load_images_dataset(self.images_path, target=t["target"]).data_sha256
        kwargs = {**self._train_kwargs(t["epochs"]), "target": t["target"], "test_fraction": t["test_fraction"],
                  "threshold": t["threshold"], "positive_class": t["positive_class"] or None}
        params = self._train_params(kwargs)
        _, result = self._stage(
            "train", self.model_dir / METADATA_FILE, inputs={"images_data_sha256": images_sha}, params=params,
            check=lambda: check_model(self.model_dir, _metadata_or_none(read_metadata, self.model_dir), images_sha, params),
            action=lambda: train_images(self.images_path, self.model_dir, **kwargs))
        if result is not None:
            self._note("train", test={k: result["test"][k] for k in ("accuracy", "macro") if k in result["test"]},
                       baseline_warnings=result.get("baseline_warnings", []))
        return images_sha

    def train_mnist(self, step: int, steps: int) -> str:
        from pcapvision.classify import load_mnist, read_metadata, train_mnist

        m = self.cfg["mnist"]
        mnist_file = m["file"] or None
        log.info("[%d/%d] train %s on MNIST (%s) -> %s", step, steps, m["arch"],
                 mnist_file or "bundled sample", self.mnist_dir)
        info = load_mnist(mnist_file, seed=self.seed, allow_download=False)[4]
        kwargs = {**self._train_kwargs(m["epochs"]), "arch": m["arch"]}
        params = self._train_params(kwargs)
        _, result = self._stage(
            "mnist-train", self.mnist_dir / METADATA_FILE, inputs={"mnist_data_sha256": info["data_sha256"]}, params=params,
            check=lambda: check_model(self.mnist_dir, _metadata_or_none(read_metadata, self.mnist_dir), info["data_sha256"],
                                      params),
            action=lambda: train_mnist(self.mnist_dir, mnist_file=mnist_file, allow_download=False, **kwargs))
        if result is not None:
            self._note("mnist-train", test={k: result["test"][k] for k in ("accuracy", "macro") if k in result["test"]},
                       baseline_warnings=result.get("baseline_warnings", []))
        return info["data_sha256"]

    def robustness(self, step: int, steps: int, name: str, model_dir: Path, data: Path | str, data_sha: str) -> None:
        from pcapvision.classify import read_metadata
        from pcapvision.robustness import run_suite, suite_config

        suite = self.cfg["robustness"]["suite"]
        out_dir = self.out / name
        log.info("[%d/%d] robustness (%s suite) of %s -> %s", step, steps, suite, model_dir, out_dir)
        model_meta = read_metadata(model_dir)
        model_sha = model_meta["model_sha256"]
        sizes = {k: v for k, v in self.cfg["robustness"].items() if k in SUITE_SIZES and v}
        suite_cfg = replace(suite_config(suite), **sizes)
        params = {"suite": suite, "seed": self.seed, "config": asdict(suite_cfg),
                  "positive_class": model_meta.get("positive_class")}
        flows = self.flows_dir if data != "mnist" else None
        inputs = {"model_sha256": model_sha, "data_sha256": data_sha}
        if flows is not None:
            inputs["flows_sha256"] = self.flows_sha
        report_json = out_dir / "robustness.json"
        mnist_file = self.cfg["mnist"]["file"] or None if data == "mnist" else None
        _, result = self._stage(name, report_json, inputs=inputs, params=params,
                                check=lambda: check_robustness(report_json, model_sha, data_sha, params),
                                action=lambda: run_suite(model_dir, data, out_dir, suite, flows=flows, seed=self.seed,
                                                         mnist_file=mnist_file, config=suite_cfg))
        if result is not None:  # the headline figures, as the report's summary table states them
            self._note(name, headline=result["summary"])

    def report(self) -> None:
        from pcapvision.run_report import write_run_report

        path = self.out / REPORT_FILE
        stages = self.record.data["stages"]
        inputs = {name: entry.get("artifact_sha256") for name, entry in stages.items() if name not in ("ingest", "report")}
        inputs["flows"] = self.flows_sha
        self._stage("report", path, inputs=inputs, params={"pcapvision": __version__}, check=lambda: None,
                    action=lambda: write_run_report(path, self.out, self.record.data, self.cfg))


def format_run(record: Mapping[str, Any]) -> str:
    """A short human summary of a run record."""
    lines = [f"pcapvision run finished in {record.get('seconds', 0):.1f} s"]
    stages = record.get("stages", {})
    for name in sorted(stages, key=lambda n: STAGES.index(n) if n in STAGES else len(STAGES)):
        info = stages[name]
        seconds = info.get("seconds")
        state = "reused" if info.get("reused") else (f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
        lines.append(f"  {name:<16} {info.get('output', '')}  ({state})")
    for stage, what in (("train", "traffic"), ("mnist-train", "MNIST")):
        info = record.get("stages", {}).get(stage, {})
        test = info.get("test")
        if test:
            macro = test.get("macro", {})
            lines.append(f"  {what} model: test accuracy {test.get('accuracy', float('nan')):.4f}, "
                         f"macro F1 {macro.get('f1', float('nan')):.4f}")
        for warning in info.get("baseline_warnings", []):
            lines.append(f"  NOTE ({what}): {warning}")
    for stage, what in (("robustness", "traffic"), ("mnist-robustness", "MNIST")):
        for row in record.get("stages", {}).get(stage, {}).get("headline", []):
            value = row["value"]
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"  {what} robustness: {row['measure']}: {shown}")
    for name, path in record.get("reports", {}).items():
        if path:
            lines.append(f"  {name + ':':<17} {path}")
    return "\n".join(lines)
