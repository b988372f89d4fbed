"""The scheduled retrain job: new captures -> challenger -> gates against the champion -> promote or keep.

Exit codes for schedulers (``EXIT_*``): 0 promoted or nothing to do; 1 the run failed on bad
input; 2 usage error; 3 internal error (a bug: the CLI's code for every command); 4 another run
holds the registry's lock; 5 the challenger was rejected by a gate.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pcapvision.errors import DataContractError, InputNotFoundError, ParameterError, PcapvisionError
from pcapvision.io import metadata_from_schema, parquet_files, sha256_file, write_parquet_atomic
from pcapvision.lock import exclusive_lock
from pcapvision.retrain import gates as gating
from pcapvision.retrain.config import TRAINING_KEYS, RetrainConfig, check_training
from pcapvision.retrain.drift import drift_report, flow_features
from pcapvision.retrain.holdout import groups_of_version, grow, majority_labels
from pcapvision.retrain.registry import DirectoryRegistry, utc_now

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERNAL = 3
EXIT_REJECTED = 5
EXIT_LOCKED = 4
DEFAULT_LABELS = "labels.csv"
STATE = "state"
HOLDOUT = "holdout"


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, action: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return action()
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 2)


def _read_images(path: str | os.PathLike[str]) -> Any:
    tables = [pq.read_table(f) for f in parquet_files(path)]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).replace_schema_metadata(tables[0].schema.metadata)


def _in_groups(table: pa.Table, groups: set[str]) -> pa.ChunkedArray:
    return pc.is_in(table.column("split_group"), value_set=pa.array(sorted(groups), type=table.schema.field("split_group").type))


def _subset(table: pa.Table, groups: set[str], path: Path, keep: bool = True) -> Path:
    mask = _in_groups(table, groups)
    return write_parquet_atomic(table.filter(mask if keep else pc.invert(mask)), path)


def _training_params(champion_meta: Mapping[str, Any] | None, config: RetrainConfig, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The champion's training parameters (the config's on the first run), then the overrides."""
    if champion_meta is not None:
        base = {k: v for k, v in (champion_meta.get("params") or {}).items() if k in TRAINING_KEYS}
        base.setdefault("target", champion_meta.get("target", "label"))
    else:
        base = dict(config.training)
    return {**base, **check_training({k: v for k, v in overrides.items() if v is not None})}


def _robust_accuracy(model_dir: Path, holdout_path: Path, eps: float, seed: int) -> dict[str, Any]:
    """Accuracy on the holdout under FGSM at ``eps`` (L-inf, pixel units)."""
    from pcapvision.classify import load_images_dataset, load_model
    from pcapvision.robustness import AttackSpec, run_attack

    model, meta = load_model(model_dir)
    classes = list(meta["class_names"])
    data = load_images_dataset(holdout_path, target=meta.get("target", "label"))
    known = np.flatnonzero(np.isin(data.labels, classes))
    y = np.asarray([classes.index(v) for v in data.labels[known]], dtype=np.int64)
    result = run_attack(AttackSpec("fgsm", eps=eps), model, data.x[known], y, class_names=classes, seed=seed)
    return {"attack": "fgsm", "eps": eps, "n_samples": int(len(y)),
            "clean_accuracy": float(result.metrics["clean_accuracy"]),
            "robust_accuracy": float(result.metrics["robust_accuracy"])}


def _evaluate(model_dir: Path, holdout_path: Path, out_dir: Path, eps: float, seed: int) -> dict[str, Any]:
    from pcapvision.classify import evaluate

    record = evaluate(model_dir, holdout_path, out_dir=out_dir)
    robust = _robust_accuracy(model_dir, holdout_path, eps, seed)
    return {"figures": {**gating.headline(record["test"]), "robust_accuracy": robust["robust_accuracy"]},
            "fgsm": robust, "baselines": record["baselines"], "report": os.fspath(out_dir / "report.html")}


def _group_column(images_meta: Mapping[str, Any]) -> str:
    group_by = ((images_meta.get("params") or {}).get("group_by")) or "capture"
    return "source_sha256" if group_by == "capture" else "dst_ip"


def retrain(
    registry: str | os.PathLike[str] | DirectoryRegistry,
    data: str | os.PathLike[str] | None = None,
    *,
    images: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    labels_format: str = "rules",
    config: RetrainConfig | None = None,
    training: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the job once; return the run record (also written to ``REG/runs/<run_id>.json``).

    ``data``: a directory of labelled captures (label rules: ``labels``, default ``labels.csv`` at
    its top; ``labels_format``: any ingest label-importer format, imported with default options
    into the data area first), ingested incrementally into the registry's data area; or
    ``images``: an images table taken as it is. ``training``: training parameters overriding the champion's (or the
    config's). The record's ``status`` is ``promoted``, ``rejected``, ``nothing-to-do`` (no new
    groups and unchanged labels) or ``failed``; ``exit_code`` follows the module's scheme.
    Raises :class:`~pcapvision.errors.LockedError` when another run holds the registry.
    """
    if (data is None) == (images is None):
        raise ParameterError("The 'data' and 'images' parameters: give exactly one (a captures directory or an images table).")
    reg = open_registry(registry)
    config = config or RetrainConfig()
    started = time.perf_counter()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
    record: dict[str, Any] = {"run_id": run_id, "started": utc_now(), "registry": reg.uri,
                              "data": os.fspath(data) if data is not None else None,
                              "images": os.fspath(images) if images is not None else None, "config": config.to_dict()}
    with exclusive_lock(reg.lock_path, what="retrain"):
        timer = _Timer()
        try:
            _run(reg, data, images, labels, labels_format, config, dict(training or {}), quiet, record, timer)
        except BaseException as exc:
            expected = isinstance(exc, (PcapvisionError, OSError))
            record.update(status="failed", exit_code=EXIT_FAILED if expected else EXIT_INTERNAL,
                          error=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            record["seconds"] = {**timer.seconds, "total": round(time.perf_counter() - started, 2)}
            record["finished"] = utc_now()
            reg.write_run(record)
    return record


def _run(reg: DirectoryRegistry, data: Any, images: Any, labels: Any, labels_format: str, config: RetrainConfig,
         overrides: dict[str, Any],
         quiet: bool, record: dict[str, Any], timer: _Timer) -> None:
    from pcapvision.classify import fit_reference, load_images_dataset, load_model, read_metadata, train_images

    reg.clean_staging()
    state = reg.read_state(STATE)
    champion = reg.champion()
    champion_meta = read_metadata(reg.model_dir(champion)) if champion is not None else None
    record["champion_before"] = champion

    # 1. data: ingest and image what is new, or take an images table
    labels_sha = None
    if images is None:
        labels_sha, images_path = timer("ingest_and_image", lambda: _ingest_and_image(
            reg, Path(data), labels, labels_format, champion_meta, config, quiet, record))
    else:
        images_path = Path(images)
        record["inputs"] = {"images": os.fspath(images_path), "images_sha256": [sha256_file(f) for f in parquet_files(images_path)]}
    relabelled = state.get("labels_sha256") is not None and labels_sha != state.get("labels_sha256")
    if relabelled:
        log.info("the label rules changed since the last run: their flows were re-labelled, every group is retrained")
    table = _read_images(images_path)
    images_meta = metadata_from_schema(table.schema)
    params = _training_params(champion_meta, config, overrides)
    target = params.get("target", "label")
    labelled = table.filter(pc.invert(pc.is_null(table.column(target))))
    group_class = majority_labels(labelled.column("split_group").to_pylist(), labelled.column(target).to_pylist())
    seen = set(state.get("groups_seen", []))
    new = {g: c for g, c in group_class.items() if g not in seen}
    record["new_groups"] = sorted(new)
    record["relabelled"] = relabelled
    if not new and not relabelled:
        record.update(status="nothing-to-do", exit_code=EXIT_OK, champion_after=champion,
                      message="no new capture groups and unchanged labels since the last run: nothing to do")
        log.info("%s: %s", reg.uri, record["message"])
        return

    # 2. the holdout: grown with new groups only
    holdout_before = reg.read_state(HOLDOUT)
    holdout_after, added = grow(holdout_before, new, config.holdout_fraction)
    eval_version = int(holdout_before.get("version", 0)) or int(holdout_after.get("version", 0))
    eval_groups = groups_of_version(holdout_after, eval_version)
    if not eval_groups:
        raise DataContractError(f"{images_path}: no class brought two or more split groups, so no holdout could be "
                                "set aside; add captures")
    record["holdout"] = {"evaluated_version": eval_version, "version_after": holdout_after["version"],
                         "groups_evaluated": len(eval_groups), "groups_added": added,
                         "groups_excluded_from_training": len(holdout_after["groups"])}

    with reg.new_version() as (number, staging):
        train_path = _subset(labelled, set(holdout_after["groups"]), staging / "train-images.parquet", keep=False)
        holdout_path = _subset(labelled, eval_groups, staging / "holdout-images.parquet")
        model_dir = staging / "model"

        # 3. challenger, trained with the champion's configuration
        log.info("training challenger v%d (%s) on %s", number, params, train_path.name)
        timer("train", lambda: train_images(train_path, model_dir, **params))
        # 4. both models on the same holdout rows, plus FGSM
        seed = int(params.get("seed", 0))
        challenger = timer("evaluate_challenger", lambda: _evaluate(
            model_dir, holdout_path, staging / "holdout-evaluation", config.fgsm_eps, seed))
        champ = None
        if champion is not None:
            champ = timer("evaluate_champion", lambda: _evaluate(
                reg.model_dir(champion), holdout_path, staging / f"champion-{champion:04d}-evaluation",
                config.fgsm_eps, seed))
        results = gating.evaluate_gates(config.gates, challenger["figures"], champ["figures"] if champ else None,
                                        challenger["baselines"])
        failures = gating.failed(results)

        # 5. drift of the new data against the champion's training data; the challenger's reference
        model, meta = load_model(model_dir)
        train_groups = sorted(set(labelled.column("split_group").to_pylist()) - set(holdout_after["groups"]))
        train_data = load_images_dataset(train_path, target=target)
        reference = fit_reference(model, train_data.x, model_sha256=meta["model_sha256"],
                                  quantile=config.drift.reference_quantile, max_points=config.drift.reference_points,
                                  seed=seed)
        reference.save(staging / "reference.npz")
        drift = timer("drift", lambda: _drift(reg, champion, labelled, images_path if images is None else None,
                                              images_meta, set(new), config, record.get("flows_dir")))

        decision = "promoted" if not failures else "rejected"
        version_record = {
            "created": utc_now(), "run_id": record["run_id"], "decision": decision,
            "compared_with": champion, "model_sha256": meta["model_sha256"], "training": params,
            "representation": meta.get("representation"), "representation_params": meta.get("representation_params"),
            "holdout": {"version": eval_version, "n_rows": challenger["figures"]["n_samples"]},
            "metrics": {"challenger": challenger, "champion": champ}, "gates": results, "failed_gates": failures,
            "data": {"images": os.fspath(images_path), "train_groups": train_groups,
                     "train_images_sha256": meta.get("data_sha256"), "n_train_images": len(train_data),
                     "labels_sha256": labels_sha},
            "drift": drift,
        }
        for tmp in (train_path, holdout_path):
            tmp.unlink()
        timer("publish", lambda: reg.publish(number, staging, version_record))

    record.update(version=number, decision=decision, gates=results, failed_gates=failures, drift=drift,
                  metrics={"challenger": challenger["figures"], "champion": champ["figures"] if champ else None})
    if failures:
        for line in failures:
            log.warning("challenger v%d rejected: %s", number, line)
        record.update(status="rejected", exit_code=EXIT_REJECTED, champion_after=champion)
    else:
        reg.promote(number, reason=f"retrain run {record['run_id']}: every gate passed")
        record.update(status="promoted", exit_code=EXIT_OK, champion_after=number)
    if drift.get("drifted"):
        log.warning("drift: %s", "; ".join(drift["flags"]))
    # state last: a crash before this line only makes the next run redo the same work
    reg.write_state(HOLDOUT, holdout_after)
    reg.write_state(STATE, {"groups_seen": sorted(group_class), "labels_sha256": labels_sha, "last_run": record["run_id"]})


def _ingest_and_image(reg: DirectoryRegistry, data: Path, labels: Any, labels_format: str,
                      champion_meta: Mapping[str, Any] | None,
                      config: RetrainConfig, quiet: bool, record: dict[str, Any]) -> tuple[str | None, Path]:
    """Ingest new captures into the data area (parts whose labels changed are redone by ingest
    itself: a part records its label rules' hash) and image them all; ``(labels_sha256, images)``."""
    from pcapvision.imaging import image_flows
    from pcapvision.ingest import Labeler, ingest

    if not data.is_dir():
        raise InputNotFoundError(f"{data}: no such captures directory")
    labels_path = Path(labels) if labels is not None else data / DEFAULT_LABELS
    if labels is None and not labels_path.is_file():
        raise DataContractError(f"{data}: no {DEFAULT_LABELS} at the top of the data directory (or give --labels)")
    labels_sha = sha256_file(labels_path)
    rules = labels_path
    if labels_format != "rules":
        from pcapvision.ingest import import_labels

        rules = reg.data_dir / "imported-labels.csv"
        import_labels([labels_path], labels_format, rules)
    labeler = Labeler.from_rules_csv(rules)
    flows_dir = reg.data_dir / "flows"
    summary = ingest([data], flows_dir, labeler=labeler, quiet=quiet)
    if summary.files_failed:
        log.warning("%d capture(s) failed to ingest; continuing with the rest", len(summary.files_failed))
    if champion_meta is not None:
        image_params = (champion_meta.get("images_schema") or {}).get("params") or {}
        representation = champion_meta["representation"]
        rep_params = champion_meta.get("representation_params") or {}
        mask, group_by = bool(image_params.get("mask_tls_sni", False)), image_params.get("group_by", "capture")
    else:
        representation, rep_params, mask, group_by = config.representation, {}, False, "capture"
    images_path = reg.data_dir / "images.parquet"
    image_flows(flows_dir, images_path, representation, rep_params, mask_tls_sni=mask, group_by=group_by, quiet=quiet)
    record["flows_dir"] = os.fspath(flows_dir)
    record["inputs"] = {"labels": os.fspath(labels_path), "labels_format": labels_format, "labels_sha256": labels_sha,
                        "ingest": summary.to_dict()}
    return labels_sha, images_path


def _drift(reg: DirectoryRegistry, champion: int | None, labelled: Any, images_path: Path | None,
           images_meta: Mapping[str, Any], new_groups: set[str], config: RetrainConfig, flows_dir: str | None) -> dict[str, Any]:
    from pcapvision.classify import Reference, load_model

    if champion is None:
        return {"skipped": "no champion yet", "drifted": False}
    champ_record = reg.version(champion)
    reference_groups = set(champ_record.get("data", {}).get("train_groups", []))
    far_share = threshold = None
    new_rows = labelled.filter(_in_groups(labelled, new_groups))
    if reg.reference_path(champion).is_file() and new_rows.num_rows:
        from pcapvision.imaging import images_to_array

        model, _ = load_model(reg.model_dir(champion))
        reference = Reference.load(reg.reference_path(champion))
        _, inside = reference.score(model, images_to_array(new_rows))
        far_share, threshold = float((~inside).mean()), reference.threshold
    if flows_dir is None:
        new = ref = None  # an images table was given: flow-level mixes need the flows
    else:
        column = _group_column(images_meta)
        new = flow_features(flows_dir, new_groups, column)
        ref = flow_features(flows_dir, reference_groups, column)
    return drift_report(new, ref, config.drift, far_share=far_share, far_threshold=threshold, n_images=new_rows.num_rows)


def open_registry(uri: str | os.PathLike[str] | DirectoryRegistry) -> DirectoryRegistry:
    """The registry at ``uri``: a directory (created on first use), or an MLflow ``sqlite:///FILE.db``
    tracking URI (optionally ``#model-name``; needs the ``mlflow`` extra)."""
    if isinstance(uri, DirectoryRegistry):
        return uri
    from pcapvision.retrain.mlflow_registry import MlflowRegistry, is_mlflow_uri

    return MlflowRegistry(os.fspath(uri)) if is_mlflow_uri(uri) else DirectoryRegistry(uri)


__all__ = ["EXIT_FAILED", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_OK", "EXIT_REJECTED", "open_registry", "retrain"]
