"""The robustness suite: load a model and its test data, run every study, write json + html.

``run_suite`` is what ``pcapvision robustness`` calls. It reads a classify model directory and
either the model's own MNIST test split (``data="mnist"``) or an images table (the model's
stored test split when it is the table the model was trained on, all rows otherwise), then runs
the studies of the chosen suite (``quick``: minutes on a CPU; ``full``: adds retraining
defences, the noise class, stronger PGD) and writes ``robustness.json``, ``robustness.html`` and
``adversarial_examples.npz`` (per-example norms and predictions) to ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.errors import DataContractError, InputNotFoundError, ModelFormatError
from pcapvision.io import make_metadata, write_bytes_atomic, write_json_atomic
from pcapvision.outputs import check_writable_directory, output_lock, replace_files_together
from pcapvision.robustness.attacks import (
    AttackSpec,
    BinaryTarget,
    art_classifier,
    confusion_matrix,
    decide,
    decision_rule,
    predict_proba,
    robust_accuracy_at_radii,
    run_attack,
)
from pcapvision.robustness.studies import (
    attack_study,
    defence_study,
    fooling_study,
    noise_class_study,
    packet_study,
    realizable_study,
    subsample,
    traffic_study,
)
from pcapvision.validation import check_choice, check_int

log = logging.getLogger(__name__)

SUITES = ("quick", "full")
ATTACK_NOTE = (
    "Every rate is decided at the model's operating point (the threshold on p(malicious) for two-class models, "
    "else arg-max). attack_success_rate: among samples classified correctly before the attack, the fraction "
    "classified wrongly after; malicious_to_normal_evasion_rate: among malicious samples detected before the attack, "
    "the fraction scored below the threshold after; error_rate_after_attack_unconditioned: all wrong answers after "
    "the attack, the model's clean misses included. Norms are per example over [0, 1] pixels; L0 counts pixels "
    "moved by >= 0.5/255."
)
JSON_FILE = "robustness.json"
HTML_FILE = "robustness.html"
EXAMPLES_FILE = "adversarial_examples.npz"


@dataclass(frozen=True)
class SuiteConfig:
    """How much of each study a suite runs (sizes are numbers of test images)."""

    n_eval: int = 1000
    n_attack: int = 200
    fgsm_eps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    pgd_linf_eps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_l2_eps: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    n_deepfool: int = 50
    deepfool_steps: int = 30
    deepfool_radii: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    report_eps: float = 0.1  # Linf budget of the confusion matrix and the example rows
    fooling_per_class: int = 2
    fooling_steps: int = 200
    noise_class: bool = False
    noise_per_class: int = 50
    retrain_epochs: int = 2
    defences: tuple[str, ...] = ()
    defence_eps: float | None = None  # None: 0.3 for MNIST, report_eps for traffic
    defence_epochs: int = 2
    defence_steps: int = 10
    defence_train_n: int = 8000
    n_certify: int = 20
    certify_n: int = 1000
    certify_sigma: float = 0.25
    n_realizable: int = 10
    n_packet_flows: int = 30  # TCP flows whose packets are distorted and re-ingested
    realizable_steps: int = 40
    batch_size: int = 256


QUICK = SuiteConfig()
FULL = SuiteConfig(
    n_eval=2000, n_attack=1000, pgd_steps=40, pgd_restarts=3, n_deepfool=200, deepfool_steps=50,
    fooling_per_class=5, fooling_steps=500, noise_class=True, defences=("pgd", "fgsm_rs", "gaussian"),
    n_certify=100, certify_n=2000, n_realizable=50,
)


# How gradient attacks apply to a model whose input bytes are categories (classify's cnn-embed).
EMBEDDING_ATTACK_NOTE = (
    "cnn-embed treats each byte as a category (a learned embedding per byte value). Its embedding interpolates "
    "linearly between neighbouring byte values, so the model is a continuous function of the pixels and FGSM/PGD/"
    "DeepFool run through it unchanged: these attacks search the continuous relaxation between byte values, and the "
    "pixel-space rows measure that relaxation (an upper bound on what whole bytes allow). The realizable attack "
    "projects every perturbed pixel back to the nearest whole byte before it is written into the flow and re-read, "
    "so its rows are the ones that hold for real traffic."
)


def suite_config(suite: str) -> SuiteConfig:
    """The configuration of a named suite."""
    return {"quick": QUICK, "full": FULL}[check_choice("suite", suite, SUITES)]


@dataclass
class EvalData:
    """The test images (and training images, for defences) of one model."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    description: dict[str, Any]
    flow_id: np.ndarray | None = None
    payload_length: np.ndarray | None = None
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    is_mnist: bool = False
    representation: str | None = None
    representation_params: dict[str, Any] = field(default_factory=dict)
    images_schema: dict[str, Any] = field(default_factory=dict)


def load_eval_data(model_dir: str | os.PathLike[str], metadata: dict[str, Any], data: str | os.PathLike[str] | None,
                   mnist_file: str | os.PathLike[str] | None = None) -> EvalData:
    """The data the suite runs on (see the module docstring).

    Test rows of an images table come from :func:`pcapvision.classify.resolve_test_rows`; the
    training rows (for defences and the noise class) from the model's training table, found by
    content hash.
    """
    from pcapvision.classify import (
        check_representation,
        find_training_table,
        load_images_dataset,
        reload_mnist,
        resolve_test_rows,
    )

    class_names = [str(c) for c in metadata["class_names"]]
    info = metadata.get("dataset") or {}
    if data is None or str(data) == "mnist":
        if info.get("name") != "mnist":
            raise ModelFormatError(f"{model_dir}: the model was not trained on MNIST; give an images table as DATA")
        if mnist_file is not None:
            info = {**info, "source": "file", "path": str(mnist_file)}
        x_train, y_train, x_test, y_test = reload_mnist(info)
        desc = {"name": "mnist", "split": "the model's MNIST test split", "path": info.get("path"),
                "data_sha256": info.get("data_sha256"), "is_sample": info.get("is_sample")}
        return EvalData(x_test, y_test, class_names, desc, x_train=x_train, y_train=y_train, is_mnist=True)

    if metadata.get("representation") is None:
        raise ModelFormatError(f"{model_dir}: an MNIST model cannot be tested on the images table {data}; "
                               "omit DATA (or give 'mnist')")
    target = metadata.get("target", "label")
    images = load_images_dataset(data, target=target)
    check_representation(metadata, images.schema, str(data))
    known = np.isin(images.labels, class_names)
    if not known.any():
        raise DataContractError(f"{data}: no image has a {target} the model knows ({class_names})")
    rows = resolve_test_rows(model_dir, metadata, images)
    te = rows.test[known[rows.test]]
    if len(te) == 0:
        raise DataContractError(f"{data}: no test rows (every row was seen by the model in training or validation, "
                                "or has a class it does not know)")
    y_all = np.asarray([class_names.index(v) if v in class_names else -1 for v in images.labels], np.int64)
    x_train = y_train = None
    train_table, why = find_training_table(model_dir, metadata, (images,))
    if train_table is not None:
        tr = rows.train if train_table is images else resolve_test_rows(model_dir, metadata, train_table).train
        x_train = train_table.x[tr]
        y_train = np.asarray([class_names.index(v) for v in train_table.labels[tr]], np.int64)
    else:
        log.info("training rows unavailable (%s): defences and the noise class are skipped", why)
    desc = {"name": "images", "path": str(data), "target": target, "split": rows.rule, "data_sha256": images.data_sha256,
            "n_unknown_labels_dropped": int((~known[rows.test]).sum()), "test_rows": rows.describe()}
    return EvalData(images.x[te], y_all[te], class_names, desc, flow_id=images.flow_id[te],
                    payload_length=None if images.payload_length is None else images.payload_length[te], x_train=x_train,
                    y_train=y_train, representation=images.representation,
                    representation_params=dict(images.params), images_schema=images.schema)


def _binary_target(metadata: dict[str, Any], class_names: list[str], positive_class: str | None) -> BinaryTarget | None:
    from pcapvision.classify import model_positive_class

    positive = model_positive_class(metadata, positive_class)
    if positive is None:
        return None
    pos = class_names.index(positive)
    threshold = float((metadata.get("params") or {}).get("threshold", 0.5))
    return BinaryTarget(malicious_index=pos, normal_index=1 - pos, threshold=threshold)


def run_suite(
    model_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "robustness-report",
    suite: str = "quick",
    *,
    mnist_file: str | os.PathLike[str] | None = None,
    flows: str | os.PathLike[str] | None = None,
    seed: int = 0,
    config: SuiteConfig | None = None,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """Run the robustness suite on a classify model directory and write the report.

    ``data``: ``None`` or ``"mnist"`` for an MNIST model's own test split (``mnist_file`` when
    the file moved), else an images table. ``flows``: the flows table the images were rendered
    from, for network-level distortions. ``config`` overrides the named suite's sizes.
    ``positive_class`` overrides the malicious (positive) class stored with a two-class model.
    Returns the ``robustness.json`` record. A second run into the same ``output_dir`` is refused
    (:class:`~pcapvision.errors.LockedError`) while this one runs.
    """
    with output_lock(Path(output_dir), what="robustness run into this directory"):
        return _run_suite(model_dir, data, output_dir, suite, mnist_file=mnist_file, flows=flows, seed=seed,
                          config=config, positive_class=positive_class)


def _run_suite(model_dir, data, output_dir, suite, *, mnist_file, flows, seed, config, positive_class) -> dict[str, Any]:
    from pcapvision.classify import load_model

    seed = check_int("seed", seed, min_value=0)
    cfg = config if config is not None else suite_config(suite)
    check_choice("suite", suite, SUITES)
    if data is not None and str(data) != "mnist" and not Path(data).exists():  # fail before TensorFlow starts
        raise InputNotFoundError(f"{data}: no such file or directory")
    started = time.perf_counter()
    model, metadata = load_model(model_dir)  # checks the model directory before TensorFlow is imported
    import keras

    keras.utils.set_random_seed(seed)
    ev = load_eval_data(model_dir, metadata, data, mnist_file)
    names = ev.class_names
    binary = _binary_target(metadata, names, positive_class)
    out_dir = Path(output_dir)
    check_writable_directory(out_dir)  # before minutes of attacks, not after
    eval_idx = subsample(len(ev.y), cfg.n_eval, seed)
    x_eval, y_eval = ev.x[eval_idx], ev.y[eval_idx]
    # In random order: DeepFool and certification take the first images of the attacked set, and
    # data files may be sorted by label.
    attack_idx = eval_idx[np.random.default_rng(seed + 1).permutation(len(eval_idx))[: cfg.n_attack]]
    x_att, y_att = ev.x[attack_idx], ev.y[attack_idx]
    proba_eval = predict_proba(model, x_eval)
    proba_att = predict_proba(model, x_att)
    record: dict[str, Any] = make_metadata(
        "robustness", {"suite": suite, "seed": seed, "config": asdict(cfg), "flows": None if flows is None else str(flows),
                       "positive_class": None if binary is None else names[binary.malicious_index]},
        model={"dir": str(model_dir), "model_sha256": metadata.get("model_sha256"), "class_names": names,
               "arch": (metadata.get("params") or {}).get("arch"), "representation": metadata.get("representation")},
        data={**ev.description, "n_test": int(len(ev.y)), "n_eval": int(len(y_eval)), "n_attacked": int(len(y_att))},
    )
    record["clean"] = {"accuracy": float((decide(proba_eval, binary) == y_eval).mean()),
                       "accuracy_attack_subset": float((decide(proba_att, binary) == y_att).mean()),
                       "decision": decision_rule(binary)}
    if binary is not None:
        record["clean"]["binary"] = {**asdict(binary), "malicious_class": names[binary.malicious_index]}

    from pcapvision.robustness.distortions import severity_sweep

    log.info("distortions on %d images", len(y_eval))
    record["distortions"] = severity_sweep(lambda a: decide(predict_proba(model, a), binary), x_eval, y_eval, seed=seed)
    record["traffic_distortions"] = traffic_study(model, ev, eval_idx, flows, binary, seed)
    record["packet_distortions"] = packet_study(model, ev, eval_idx, flows, cfg, binary, seed)

    classifier = art_classifier(model)
    attack_rows, examples, report_result = attack_study(model, classifier, x_att, y_att, proba_att, cfg, names, binary, seed)
    record["attacks"] = attack_rows
    record["attack_note"] = ATTACK_NOTE
    if record["model"]["arch"] == "cnn-embed":
        record["attack_note"] += " " + EMBEDDING_ATTACK_NOTE
    deep = run_attack(AttackSpec("deepfool", steps=cfg.deepfool_steps, batch_size=cfg.batch_size), model,
                      x_att[: cfg.n_deepfool], y_att[: cfg.n_deepfool], proba_clean=proba_att[: cfg.n_deepfool],
                      class_names=names, binary=binary, seed=seed)
    examples["deepfool"] = deep
    record["minimal_norm"] = {
        **deep.metrics,
        "accuracy_at_l2_radius": robust_accuracy_at_radii(
            y_att[: cfg.n_deepfool], decide(proba_att[: cfg.n_deepfool], binary), decide(deep.proba_adv, binary),
            deep.norms["l2"], cfg.deepfool_radii),
    }
    pred_rep = decide(report_result.proba_adv, binary)
    record["confusion_under_attack"] = {"attack": report_result.spec.name, "eps": report_result.spec.eps,
                                        "matrix": confusion_matrix(y_att, pred_rep, len(names)).tolist()}

    record["fooling"], fooling = fooling_study(model, names, cfg, seed)
    record["noise_class"] = noise_class_study(model, ev, metadata, cfg, binary, seed) if cfg.noise_class else {
        "skipped": f"not part of the {suite!r} suite (run --suite full)"}
    record["defences"] = defence_study(model, ev, x_att, y_att, cfg, binary, seed)
    from pcapvision.robustness.certify import certify_smoothing

    n_cert = min(cfg.n_certify, len(y_att))
    record["certification"] = certify_smoothing(model, x_att[:n_cert], y_att[:n_cert], sigma=cfg.certify_sigma,
                                                n=cfg.certify_n, seed=seed, batch_size=cfg.batch_size)
    record["certification"]["model"] = "the given model (not trained with noise: expect small radii)"
    record["realizable"] = realizable_study(model, ev, attack_idx, flows, cfg, binary, seed)
    record["summary"] = _summary_rows(record)
    record["seconds"] = round(time.perf_counter() - started, 1)

    from pcapvision.robustness.report import write_report

    # The three files are one report: replaced together, never half new, half old.
    replace_files_together(out_dir, {
        EXAMPLES_FILE: lambda path: _write_examples(path, y_att, proba_att, examples,
                                                    _gallery(x_att, y_att, proba_att, report_result, fooling, binary),
                                                    binary),
        JSON_FILE: lambda path: write_json_atomic(path, record),
        HTML_FILE: lambda path: write_report(path, record, x_att=x_att, y_att=y_att, proba_att=proba_att,
                                             report_result=report_result, fooling=fooling, binary=binary),
    })
    log.info("robustness report written to %s (%.0fs)", out_dir, record["seconds"])
    return record


def _summary_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"measure": "clean accuracy", "value": record["clean"]["accuracy"]}]
    worst = min((r for r in record["distortions"]), key=lambda r: r["accuracy"])
    rows.append({"measure": f"worst distortion: {worst['distortion']} severity {worst['severity']}", "value": worst["accuracy"]})
    for r in record["attacks"]:
        if r["attack"] in ("fgsm", "pgd_linf") and r["eps"] in (0.1, 0.3):
            rows.append({"measure": f"{r['attack']} eps {r['eps']:g} robust accuracy", "value": r["robust_accuracy"]})
            if "malicious_to_normal_evasion_rate" in r:
                rows.append({"measure": f"{r['attack']} eps {r['eps']:g} malicious->normal evasion",
                             "value": r["malicious_to_normal_evasion_rate"]})
    rows.append({"measure": "DeepFool median L2 of successful perturbations", "value": record["minimal_norm"]["norm_l2"]["median"]})
    rows.append({"measure": "fooling images reaching 0.99", "value": record["fooling"]["summary"]["success_rate"]})
    rows.append({"measure": "mean max confidence on uniform noise", "value": record["fooling"]["noise_confidence"]["mean_max_confidence"]})
    cert = record["certification"]["certified_accuracy"]
    for c in cert:
        if c["radius_l2"] in (0.5, 1.0):
            rows.append({"measure": f"certified accuracy at L2 {c['radius_l2']:g} (sigma {record['certification']['sigma']:g})",
                         "value": c["certified_accuracy"]})
    return rows


def _gallery(x, y, proba, report_result, fooling, binary) -> dict[str, np.ndarray]:
    """The images the report shows: the report attack's examples and the fooling images."""
    from pcapvision.robustness.report import example_order

    pred_clean = decide(proba, binary)
    pred_adv = decide(report_result.proba_adv, binary)
    order = example_order(y, pred_clean, pred_adv)
    return {"gallery/x": x[order], "gallery/x_adv": report_result.x_adv[order], "gallery/y": y[order],
            "gallery/pred_clean": pred_clean[order], "gallery/pred_adv": pred_adv[order],
            "gallery/eps": np.float64(report_result.spec.eps), "gallery/attack": np.str_(report_result.spec.name),
            "fooling/images": fooling.images, "fooling/target": fooling.target, "fooling/confidence": fooling.confidence}


def _write_examples(path: Path, y: np.ndarray, proba: np.ndarray, examples: dict[str, Any],
                    gallery: dict[str, np.ndarray], binary) -> None:
    import io

    arrays: dict[str, np.ndarray] = {"y": y, "pred_clean": decide(proba, binary), **gallery}
    for key, result in examples.items():
        arrays[f"{key}/pred"] = decide(result.proba_adv, binary)
        for norm, values in result.norms.items():
            arrays[f"{key}/{norm}"] = values
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


__all__ = ["EXAMPLES_FILE", "FULL", "HTML_FILE", "JSON_FILE", "QUICK", "SUITES", "EvalData", "SuiteConfig",
           "load_eval_data", "run_suite", "suite_config"]
