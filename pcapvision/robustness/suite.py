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


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, k)])


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
    eval_idx = _subsample(len(ev.y), cfg.n_eval, seed)
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
    record["traffic_distortions"] = _traffic_study(model, ev, eval_idx, flows, binary, seed)
    record["packet_distortions"] = _packet_study(model, ev, eval_idx, flows, cfg, binary, seed)

    classifier = art_classifier(model)
    attack_rows, examples, report_result = _attack_study(model, classifier, x_att, y_att, proba_att, cfg, names, binary, seed)
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

    record["fooling"], fooling = _fooling_study(model, names, cfg, seed)
    record["noise_class"] = _noise_class_study(model, ev, metadata, cfg, binary, seed) if cfg.noise_class else {
        "skipped": f"not part of the {suite!r} suite (run --suite full)"}
    record["defences"] = _defence_study(model, ev, x_att, y_att, cfg, binary, seed)
    from pcapvision.robustness.certify import certify_smoothing

    n_cert = min(cfg.n_certify, len(y_att))
    record["certification"] = certify_smoothing(model, x_att[:n_cert], y_att[:n_cert], sigma=cfg.certify_sigma,
                                                n=cfg.certify_n, seed=seed, batch_size=cfg.batch_size)
    record["certification"]["model"] = "the given model (not trained with noise: expect small radii)"
    record["realizable"] = _realizable_study(model, ev, attack_idx, flows, cfg, binary, seed)
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


def _attack_study(model, classifier, x, y, proba, cfg: SuiteConfig, names, binary, seed):
    rows: list[dict[str, Any]] = []
    examples: dict[str, Any] = {}
    report_result = None
    specs = [AttackSpec("fgsm", eps=e, batch_size=cfg.batch_size) for e in cfg.fgsm_eps]
    specs += [AttackSpec("pgd_linf", eps=e, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
              for e in cfg.pgd_linf_eps]
    specs += [AttackSpec("pgd_l2", eps=e, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
              for e in cfg.pgd_l2_eps]
    for spec in specs:
        result = run_attack(spec, model, x, y, proba_clean=proba, classifier=classifier, class_names=names,
                            binary=binary, seed=seed)
        rows.append(result.metrics)
        examples[f"{spec.name}_eps{spec.eps:g}"] = result
        if spec.name == "pgd_linf" and (report_result is None or abs(spec.eps - cfg.report_eps) <
                                        abs(report_result.spec.eps - cfg.report_eps)):
            report_result = result
    if report_result is None:  # no PGD budgets configured: fall back to the last attack run
        report_result = examples[list(examples)[-1]]
    return rows, examples, report_result


def _fooling_study(model, names, cfg: SuiteConfig, seed):
    from pcapvision.robustness.fooling import fooling_images, noise_confidence

    targets = np.repeat(np.arange(len(names)), cfg.fooling_per_class)
    result = fooling_images(model, targets, max_steps=cfg.fooling_steps, seed=seed)
    out = {"summary": result.summary(), "per_class": result.per_class(names),
           "noise_confidence": noise_confidence(model, 1000, seed=seed)}
    return out, result


def _noise_class_study(model, ev: EvalData, metadata, cfg: SuiteConfig, binary, seed) -> dict[str, Any]:
    from pcapvision.classify import train_model
    from pcapvision.robustness.fooling import fooling_images, noise_confidence, retrain_with_noise_class

    if ev.x_train is None:
        return {"skipped": "needs the model's training data (the images table it was trained on)"}
    n_classes = len(ev.class_names)
    # Shuffled: data files may be sorted by label, and the last tenth becomes the validation set.
    tr = np.random.default_rng(seed + 7).permutation(len(ev.y_train))[: cfg.defence_train_n]
    split = int(len(tr) * 0.9)
    new_model, info = retrain_with_noise_class(
        train_model, model, ev.x_train[tr[:split]], ev.y_train[tr[:split]], ev.x_train[tr[split:]],
        ev.y_train[tr[split:]], n_per_class=cfg.noise_per_class, epochs=cfg.retrain_epochs, seed=seed,
        max_steps=cfg.fooling_steps)
    targets = np.repeat(np.arange(n_classes), cfg.fooling_per_class)
    before = fooling_images(model, targets, max_steps=cfg.fooling_steps, seed=seed + 100)
    after = fooling_images(new_model, targets, max_steps=cfg.fooling_steps, seed=seed + 100)
    sample = _subsample(len(ev.y), 1000, seed + 11)
    x_eval, y_eval = ev.x[sample], ev.y[sample]
    noise_after = noise_confidence(new_model, 1000, seed=seed)
    counts = noise_after["predicted_class_counts"]
    return {
        **info,
        "clean_accuracy_before": float((decide(predict_proba(model, x_eval), binary) == y_eval).mean()),
        # the retrained model has one more class (noise): arg-max, as an image it calls noise is an error here
        "clean_accuracy_after": float((predict_proba(new_model, x_eval).argmax(1) == y_eval).mean()),
        "fooling_success_before": before.summary()["success_rate"],
        "fooling_success_after": after.summary()["success_rate"],
        "fooling_median_steps_before": before.summary()["median_steps_when_successful"],
        "fooling_median_steps_after": after.summary()["median_steps_when_successful"],
        "noise_mean_max_confidence_before": noise_confidence(model, 1000, seed=seed)["mean_max_confidence"],
        "noise_mean_max_confidence_after": noise_after["mean_max_confidence"],
        "noise_fraction_assigned_noise_class_after": float(counts[n_classes] / max(sum(counts), 1)),
        "note": "fresh fooling images (new seed) are grown against each model with the same budget",
    }


def selection_split(n_train: int, n_train_max: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows for a defence and a disjoint validation slice to select its epoch on.

    The slice (10% of the training rows, 20 to 500 images) is carved from the training data, so
    the images a defended model is reported on never took part in choosing it.
    """
    order = np.random.default_rng(seed).permutation(n_train)
    n_select = int(min(500, max(20, round(0.1 * n_train)), max(n_train - 1, 0)))
    return np.sort(order[n_select:][:n_train_max]), np.sort(order[:n_select])


def _defence_study(model, ev: EvalData, x_att, y_att, cfg: SuiteConfig, binary, seed) -> dict[str, Any]:
    from pcapvision.robustness.defences import adversarial_training

    if not cfg.defences:
        return {"skipped": "no defences in this suite (run --suite full)"}
    if ev.x_train is None:
        return {"skipped": "needs the model's training data (the images table it was trained on)"}
    eps = cfg.defence_eps if cfg.defence_eps is not None else (0.3 if ev.is_mnist else cfg.report_eps)
    tr, select = selection_split(len(ev.y_train), cfg.defence_train_n, seed + 3)
    evaluate = AttackSpec("pgd_linf", eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
    fgsm = AttackSpec("fgsm", eps=eps, batch_size=cfg.batch_size)

    def measure(m) -> dict[str, float]:
        p = predict_proba(m, x_att)
        return {
            "clean_accuracy": float((decide(p, binary) == y_att).mean()),
            f"fgsm_accuracy_eps{eps:g}": run_attack(fgsm, m, x_att, y_att, proba_clean=p, binary=binary,
                                                    seed=seed).metrics["robust_accuracy"],
            f"pgd{cfg.pgd_steps}_accuracy_eps{eps:g}": run_attack(evaluate, m, x_att, y_att, proba_clean=p, binary=binary,
                                                                  seed=seed).metrics["robust_accuracy"],
        }

    rows = [{"model": "standard (given)", **measure(model)}]
    runs = []
    for method in cfg.defences:
        result = adversarial_training(model, ev.x_train[tr], ev.y_train[tr], method=method, eps=eps,
                                      epochs=cfg.defence_epochs, steps=cfg.defence_steps, x_check=ev.x_train[select],
                                      y_check=ev.y_train[select], seed=seed)
        rows.append({"model": method, **measure(result.model)})
        runs.append(result.describe())
    return {"eps": eps, "evaluation_attack": evaluate.describe(), "table": rows, "training": runs,
            "n_reported": int(len(y_att)),
            "selection": (f"each defence's epoch is chosen by PGD accuracy on {len(select)} validation images carved "
                          f"from the training data (disjoint from its {len(tr)} training images); the table reports "
                          f"the {len(y_att)} attacked test images, which the selection never saw")}


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


def _traffic_study(model, ev: EvalData, eval_idx: np.ndarray, flows, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: network-level distortions apply to traffic images only"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): network-level distortions re-render flows"}
    from pcapvision.robustness.traffic_distortions import traffic_severity_sweep

    return {"rows": traffic_severity_sweep(model, ev, eval_idx, flows, seed=seed, binary=binary)}


def _packet_study(model, ev: EvalData, eval_idx: np.ndarray, flows, cfg: SuiteConfig, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: packet-level distortions apply to traffic images only"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): packet-level distortions rebuild each flow's capture"}
    from pcapvision.io import read_parquet_metadata
    from pcapvision.robustness.packet_distortions import packet_level_sweep
    from pcapvision.robustness.traffic_distortions import read_flows_table

    table = read_flows_table(flows, ev.flow_id[eval_idx])
    labels = dict(zip(ev.flow_id[eval_idx], ev.y[eval_idx]))
    rows = [r for r in table.to_pylist() if r.get("protocol") == 6 and r.get("source_file")]
    rows = [rows[i] for i in np.sort(np.random.default_rng(seed + 13).permutation(len(rows))[: cfg.n_packet_flows])]
    if not rows:
        return {"skipped": "no evaluated TCP flow in the flows table"}
    mask = bool(((ev.images_schema or {}).get("params") or {}).get("mask_tls_sni", False))
    return packet_level_sweep(model, rows, labels, ev.representation, ev.representation_params,
                              ingest_params=read_parquet_metadata(flows).get("params"), mask_tls_sni=mask,
                              binary=binary, seed=seed)


def _realizable_study(model, ev: EvalData, attack_idx: np.ndarray, flows, cfg: SuiteConfig, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: the byte-realizable attack needs payload images of flows"}
    if ev.representation != "payload":
        return {"skipped": f"representation {ev.representation!r}: pixels are not bytes the sender controls"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): the round trip rebuilds each flow's capture"}
    if ev.payload_length is None:
        return {"skipped": "the images table has no payload_length column"}
    from pcapvision.io import read_parquet_metadata
    from pcapvision.robustness.realizable import STRATEGIES, client_hello_mask, realizable_attack, round_trip
    from pcapvision.robustness.traffic_distortions import read_flows_table

    idx_all = attack_idx
    if binary is not None:  # the attacker is the malicious sender trying to pass as normal
        idx_all = idx_all[ev.y[idx_all] == binary.malicious_index]
    if not len(idx_all):
        return {"skipped": "no attacked test flow of the class the attacker would send (the test split lacks it)"}
    table_all = read_flows_table(flows, ev.flow_id[idx_all])
    is_tcp = dict(zip(table_all.column("flow_id").to_pylist(), (p == 6 for p in table_all.column("protocol").to_pylist())))
    missing = [f for f in ev.flow_id[idx_all] if f not in is_tcp]
    if missing:
        return {"skipped": f"{len(missing)} attacked flow_ids are not in {flows}"}
    position = {fid: i for i, fid in enumerate(table_all.column("flow_id").to_pylist())}
    mask_sni = bool(((ev.images_schema or {}).get("params") or {}).get("mask_tls_sni", False))
    ingest_params = read_parquet_metadata(flows).get("params")
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        if strategy == "append":
            fits = ev.payload_length[idx_all] + 5 < int(np.prod(ev.x.shape[1:]))
        else:
            fits = client_hello_mask(ev.x[idx_all])[1]
        idx = idx_all[fits & np.asarray([is_tcp[f] for f in ev.flow_id[idx_all]], bool)][: cfg.n_realizable]
        if len(idx) == 0:
            out[strategy] = {"skipped": "no attacked TCP flow has padding left after its payload" if strategy == "append"
                             else "no attacked TCP flow opens with a ClientHello"}
            continue
        table = table_all.take([position[f] for f in ev.flow_id[idx]])
        x, y, lengths = ev.x[idx], ev.y[idx], ev.payload_length[idx]
        attack = realizable_attack(model, x, y, lengths, strategy=strategy, steps=cfg.realizable_steps, seed=seed,
                                   batch_size=cfg.batch_size)
        result = round_trip(model, table, attack, y, lengths, ev.representation, ev.representation_params,
                            ingest_params=ingest_params, mask_tls_sni=mask_sni, binary=binary)
        result["attack"] = {"attack": "pgd_linf masked to sender-controlled bytes", "eps": 1.0,
                            "steps": cfg.realizable_steps, "step_size": 0.1, "quantised_to_bytes": True}
        out[strategy] = result
    return out


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
           "load_eval_data", "run_suite", "selection_split", "suite_config"]
