"""``OUT/report.html`` of ``pcapvision run``: the traffic model beside the MNIST model, on one page.

Everything is read from the artifacts the stages wrote (run.json, metrics.json, robustness.json,
adversarial_examples.npz, preview.png); nothing is recomputed except the MNIST sample grid.
Every figure has one plain sentence under it saying what it shows and what it means for
trusting the model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.report import HtmlReport

log = logging.getLogger(__name__)

MODELS = (("traffic", "model", "robustness"), ("MNIST", "mnist-model", "mnist-robustness"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def _skipped(section: Any) -> str | None:
    return section.get("skipped") if isinstance(section, Mapping) else None


class _Model:
    """What the stages wrote about one model."""

    def __init__(self, name: str, out: Path, model_dir: str, robustness_dir: str) -> None:
        self.name = name
        self.model_dir = out / model_dir
        self.robustness_dir = out / robustness_dir
        self.metrics = _read_json(self.model_dir / "report" / "metrics.json")
        self.robustness = _read_json(self.robustness_dir / "robustness.json")
        self.examples = _read_npz(self.robustness_dir / "adversarial_examples.npz")
        self.class_names = [str(c) for c in (self.robustness or {}).get("model", {}).get("class_names", [])] or (
            list((self.metrics or {}).get("test", {}).get("per_class", {}).keys()))

    @property
    def accuracy(self) -> float:
        return float(self.metrics["test"]["accuracy"])

    def attack_points(self, attack: str) -> list[tuple[float, float]]:
        rows = [r for r in (self.robustness or {}).get("attacks", []) if r.get("attack") == attack]
        if not rows:
            return []
        return sorted({(0.0, float(rows[0]["clean_accuracy"]))} | {(float(r["eps"]), float(r["robust_accuracy"])) for r in rows})


def _at(points: Sequence[tuple[float, float]], eps: float) -> float | None:
    for e, acc in points:
        if abs(e - eps) < 1e-9:
            return acc
    return None


def write_run_report(path: str | os.PathLike[str], out: str | os.PathLike[str], record: Mapping[str, Any],
                     config: Mapping[str, Any]) -> Path:
    """Write the run's one-page report to ``path`` from the artifacts under ``out``."""
    out = Path(out)
    models = [m for m in (_Model(name, out, model_dir, robustness_dir) for name, model_dir, robustness_dir in MODELS)
              if m.metrics is not None]
    rep = HtmlReport("pcapvision: a traffic model beside the MNIST proof of concept")
    rep.paragraph(
        "One run of the main job: captures are turned into flows and 28x28 images, a network is trained on them (by "
        "default cnn1d on packets images, the winner of pcapvision compare on the bundled sample), the plain CNN is "
        "trained with the same training function on MNIST as a proof of concept, and both models go "
        "through the same robustness suite. Read top to bottom: the data, how well each model does against trivial "
        "baselines, then how easily each one breaks.")
    _what_ran(rep, record, config, out)
    _data(rep, record, out, models)
    _samples(rep, out, config, models)
    _metrics(rep, models)
    _training(rep, models)
    _confusion(rep, models)
    robust = [m for m in models if m.robustness is not None]
    if robust:
        _attack_curves(rep, robust)
        _distortion_curves(rep, robust)
        _examples(rep, robust)
        _fooling(rep, robust)
        _realizable(rep, robust)
    else:
        rep.note("The robustness suite was not run (robustness.suite = \"none\"): nothing here says how easily the "
                 "models break.")
    return rep.save(path)


def _link(rep: HtmlReport, items: Sequence[tuple[str, Path]], out: Path) -> None:
    rows = [{"report": label, "file": os.path.relpath(p, out)} for label, p in items if p.is_file()]
    if rows:
        rep.table(rows, caption="Per-stage reports (paths relative to this page)")


def _what_ran(rep: HtmlReport, record: Mapping[str, Any], config: Mapping[str, Any], out: Path) -> None:
    rep.heading("What ran")
    rows = []
    for name, info in record.get("stages", {}).items():
        if name == "report":
            continue
        state = "reused" if info.get("reused") else f"ran ({info.get('seconds', 0):.1f} s)" if "seconds" in info else "ran"
        rows.append({"stage": name, "output": os.path.relpath(info.get("output", ""), out) if info.get("output") else "",
                     "state": state})
    rep.table(rows)
    rep.paragraph(f"Captures: {', '.join(record.get('captures', []))}; label rules: {record.get('labels') or 'none'}; "
                  f"seed {config['run']['seed']}; robustness suite {config['robustness']['suite']!r} with "
                  + ", ".join(f"{k} {v}" for k, v in config["robustness"].items() if k != "suite" and v)
                  + " (0 or absent: the suite's own size). The effective "
                  "configuration is stored in run.json ('pcapvision config show' prints the defaults).")
    _link(rep, [("traffic model", out / "model" / "report" / "report.html"),
                ("traffic robustness", out / "robustness" / "robustness.html"),
                ("MNIST model", out / "mnist-model" / "report" / "report.html"),
                ("MNIST robustness", out / "mnist-robustness" / "robustness.html")], out)


def _data(rep: HtmlReport, record: Mapping[str, Any], out: Path, models: Sequence[_Model]) -> None:
    rep.heading("Data")
    stages = record.get("stages", {})
    ingest = stages.get("ingest", {})
    image = _read_json(out / "images.parquet.summary.json") or {}
    rows = [{"item": "captures read / failed / already ingested",
             "value": f"{ingest.get('files_ok', 0)} / {len(ingest.get('files_failed', []))} / "
                      f"{ingest.get('files_skipped_already_ingested', 0)}"},
            {"item": "packets read this run", "value": ingest.get("packets", 0)},
            {"item": "flows written this run", "value": ingest.get("flows", 0)}]
    if image:
        rows += [{"item": "flows imaged", "value": image.get("rows_in")},
                 {"item": "flows skipped (by reason)", "value": ", ".join(f"{k}: {v}" for k, v in
                                                                          (image.get("skipped") or {}).items()) or "none"},
                 {"item": "duplicate images dropped", "value": image.get("duplicates_removed", 0)},
                 {"item": "rows dropped for conflicting labels", "value": image.get("conflicting_rows_dropped", 0)},
                 {"item": "images kept", "value": image.get("rows_out")}]
    for m in models:
        data = m.metrics.get("data", {})
        split = m.metrics.get("split", {})
        counts = data.get("class_counts")
        if data.get("name") == "mnist":
            rows.append({"item": "MNIST source", "value": f"{data.get('path') or data.get('source')} ({data.get('split')})"})
        rows.append({"item": f"{m.name}: train / validation / test images",
                     "value": f"{split.get('n_train')} / {split.get('n_validation')} / {split.get('n_test')}"})
        if counts:
            rows.append({"item": f"{m.name}: images per class", "value": ", ".join(f"{k}: {v}" for k, v in counts.items())})
    rep.table(rows)
    for failed in ingest.get("files_failed", []):
        rep.warning(f"capture failed: {failed[0]}: {failed[1]}")
    for m in models:
        for note in m.metrics.get("notes", []):
            rep.note(f"{m.name}: {note}")
    rep.paragraph("The traffic test split holds whole captures (hosts) the model never saw in training, so its figures "
                  "measure generalisation to new hosts, not to new flows of known hosts; MNIST uses its own held-out "
                  "digits. A small number of test captures means a wide error bar on every traffic figure below.")


def _samples(rep: HtmlReport, out: Path, config: Mapping[str, Any], models: Sequence[_Model]) -> None:
    rep.heading("Sample images per class")
    preview = out / "preview.png"
    if preview.is_file():
        rep.image_png(preview.read_bytes())
        rep.paragraph("Traffic: random images of each label, one row per label. If the rows look alike to you, the "
                      "model must rely on fine byte patterns, which is what the robustness section probes.")
    if any(m.name == "MNIST" for m in models):
        from pcapvision.classify import load_mnist, plot_samples_per_class

        _, _, x_test, y_test, _ = load_mnist(config["mnist"]["file"] or None, seed=config["run"]["seed"],
                                             allow_download=False)
        rep.figure(plot_samples_per_class(x_test, y_test, [str(d) for d in range(10)], per_class=8))
        rep.paragraph("MNIST: random test digits, one row per class: shapes a person recognises at a glance, the "
                      "setting in which this CNN architecture is known to work.")


def _metrics(rep: HtmlReport, models: Sequence[_Model]) -> None:
    rep.heading("Test metrics beside trivial baselines")
    for m in models:
        test = m.metrics["test"]
        rows = [{"model": f"{m.name} CNN", "accuracy": test["accuracy"], "macro F1": test["macro"]["f1"]}]
        rows += [{"model": f"baseline: {b['baseline']}", "accuracy": b["accuracy"], "macro F1": b["macro_f1"]}
                 for b in m.metrics.get("baselines", [])]
        rep.table(rows, caption=f"{m.name}: {test['n_samples']} test images")
        best = max(m.metrics.get("baselines", []), key=lambda b: b["macro_f1"], default=None)
        if best is None:
            rep.paragraph(f"{m.name}: no baseline could be fitted, so there is nothing to compare the model with.")
        elif best["macro_f1"] >= test["macro"]["f1"] - 0.03:
            rep.warning(f"{m.name}: the trivial baseline '{best['baseline']}' reaches macro F1 {best['macro_f1']:.3f} "
                        f"against the CNN's {test['macro']['f1']:.3f}: the CNN shows little beyond what that simple "
                        "feature gives, so do not credit its score to the image structure.")
        else:
            rep.paragraph(f"{m.name}: the CNN's macro F1 {test['macro']['f1']:.3f} is clearly above the best trivial "
                          f"baseline ('{best['baseline']}', {best['macro_f1']:.3f}).")


def _training(rep: HtmlReport, models: Sequence[_Model]) -> None:
    from pcapvision.classify import plot_training_curves

    rep.heading("Training curves")
    for m in models:
        history = m.metrics.get("history") or {}
        if not history.get("loss"):
            continue
        rep.figure(plot_training_curves(history), caption=m.name)
        gap = (history.get("accuracy") or [0])[-1] - (history.get("val_accuracy") or [0])[-1]
        rep.paragraph(f"{m.name}: {history.get('epochs_run', len(history['loss']))} epochs, weights from epoch "
                      f"{history.get('best_epoch')} (lowest validation loss); final train-validation accuracy gap "
                      f"{gap:+.3f}. A large gap means the model memorises its training "
                      f"{'hosts' if m.name == 'traffic' else 'digits'} more than it learns what generalises.")


def _confusion(rep: HtmlReport, models: Sequence[_Model]) -> None:
    from pcapvision.classify import plot_confusion_matrix

    rep.heading("Confusion matrices (test)")
    for m in models:
        cm = np.asarray(m.metrics["test"]["confusion_matrix"])
        rep.figure(plot_confusion_matrix(cm, m.class_names), caption=m.name)
        off = cm.sum() - np.trace(cm)
        worst = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape) if off else None
        text = (f"{m.name}: {int(off)} of {int(cm.sum())} test images misclassified"
                + (f"; the commonest error is {m.class_names[worst[0]]} taken for {m.class_names[worst[1]]} "
                   f"({int(cm[worst])} images)" if worst is not None else "") + ". Errors concentrated in one cell show "
                "which classes the model cannot tell apart.")
        rep.paragraph(text)


def _attack_curves(rep: HtmlReport, models: Sequence[_Model]) -> None:
    from matplotlib.figure import Figure

    rep.heading("Robustness to adversarial attacks (both models)")
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    styles = {"traffic": "-", "MNIST": "--"}
    colors = {"fgsm": "tab:orange", "pgd_linf": "tab:red"}
    sentences = []
    for m in models:
        for attack, color in colors.items():
            pts = m.attack_points(attack)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(m.name, ":"), color=color, marker="o",
                        label=f"{m.name} {attack.replace('_linf', '')}")
        fgsm, pgd = _at(m.attack_points("fgsm"), 0.1), _at(m.attack_points("pgd_linf"), 0.1)
        if fgsm is not None and pgd is not None:
            clean = m.attack_points("fgsm")[0][1]
            sentences.append(f"{m.name}: accuracy {clean:.2f} on the attacked images before any attack, FGSM "
                             f"{fgsm:.2f}, PGD {pgd:.2f} at eps 0.1")
    ax.set(xlabel="epsilon (Linf, pixels in [0, 1]; 0 = clean)", ylabel="accuracy on attacked test images",
           ylim=(0, 1.02), title="Accuracy under FGSM and PGD (solid: traffic, dashed: MNIST)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    rep.figure(fig)
    rep.paragraph("; ".join(sentences) + ". Each curve is accuracy as the attacker's per-pixel budget grows; a curve that "
                  "falls to zero at a small budget means a nearly invisible change flips the model's answer, so its "
                  "verdicts cannot be trusted against an adversary who can shape those pixels.")


def _distortion_curves(rep: HtmlReport, models: Sequence[_Model]) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    rep.heading("Robustness to distortions (both models)")
    fig = Figure(figsize=(8, 4.6))
    ax = fig.add_subplot()
    styles = {"traffic": "-", "MNIST": "--"}
    names = list(dict.fromkeys(r["distortion"] for m in models for r in m.robustness.get("distortions", [])))
    cmap = matplotlib.colormaps["tab10"]
    worst = []
    for m in models:
        rows = m.robustness.get("distortions", [])
        for i, name in enumerate(names):
            pts = sorted((r["severity"], r["accuracy"]) for r in rows if r["distortion"] == name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(m.name, ":"), color=cmap(i % 10), marker=".",
                        label=name if m is models[0] else None)
        top = max((r["severity"] for r in rows), default=0)
        at_top = [r for r in rows if r["severity"] == top]
        if at_top:
            w = min(at_top, key=lambda r: r["accuracy"])
            worst.append(f"{m.name}: {w['distortion']} at severity {top} leaves {w['accuracy']:.2f}")
    ax.set(xlabel="severity (0 = clean)", ylabel="accuracy", ylim=(0, 1.02),
           title="Pixel distortions by severity (solid: traffic, dashed: MNIST)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    rep.figure(fig)
    rep.paragraph("; ".join(worst) + ". These are accidental, not adversarial, changes; a model that loses most of its "
                  "accuracy to a mild one depends on exact pixel positions, which for traffic means exact byte offsets.")
    for m in models:
        traffic = m.robustness.get("traffic_distortions") or {}
        if traffic.get("rows"):
            top = max(r["severity"] for r in traffic["rows"])
            rows = [r for r in traffic["rows"] if r["severity"] == top]
            rep.table([{"network-level distortion": r["distortion"], "accuracy at top severity": r["accuracy"]} for r in rows],
                      caption=f"{m.name}: flows changed on the wire (bytes, packets, timing) and re-rendered")
            rep.paragraph("Network-level changes an attacker or a network can make without touching the content: "
                          "a large drop here is a cheap evasion.")


def _examples(rep: HtmlReport, models: Sequence[_Model]) -> None:
    from pcapvision.robustness import plot_adversarial_rows

    rep.heading("Adversarial examples")
    for m in models:
        ex = m.examples or {}
        if "gallery/x" not in ex:
            continue
        attack, eps = str(ex["gallery/attack"]), float(ex["gallery/eps"])
        rep.figure(plot_adversarial_rows(ex["gallery/x"], ex["gallery/x_adv"], ex["gallery/y"], ex["gallery/pred_clean"],
                                         ex["gallery/pred_adv"], m.class_names,
                                         f"{m.name}: {attack} eps {eps:g}: original / adversarial / difference"))
        correct = ex["gallery/pred_clean"] == ex["gallery/y"]
        flipped = int((correct & (ex["gallery/pred_adv"] != ex["gallery/y"])).sum())
        rep.paragraph(f"{m.name}: of the {len(correct)} images shown (those the attack flipped first), {int(correct.sum())} "
                      f"were classified correctly and {flipped} of those changed class under {attack} with every pixel "
                      f"moved by at most {eps:g}; the bottom row shows the change, which is hard to see in the middle "
                      "row.")


def _fooling(rep: HtmlReport, models: Sequence[_Model]) -> None:
    from pcapvision.robustness import plot_fooling_grid

    rep.heading("Fooling images")
    for m in models:
        ex = m.examples or {}
        fo = m.robustness.get("fooling") or {}
        if "fooling/images" not in ex or not len(ex["fooling/images"]):
            continue
        per_class = min(3, max(1, int(np.bincount(ex["fooling/target"]).max())))
        rep.figure(plot_fooling_grid(ex["fooling/images"], ex["fooling/target"], ex["fooling/confidence"], m.class_names,
                                     per_class=per_class), caption=m.name)
        s = fo.get("summary", {})
        noise = (fo.get("noise_confidence") or {}).get("mean_max_confidence")
        rep.paragraph(f"{m.name}: starting from noise, {s.get('success_rate', 0):.0%} of attempts reach confidence "
                      f"{s.get('threshold', 0.99)} in a chosen class" + (f"; on plain noise the mean top confidence is "
                      f"{noise:.2f}" if noise is not None else "") + ". High confidence on meaningless input means the "
                      "model's confidence alone is no evidence that an input is real traffic (or a real digit).")


def _realizable(rep: HtmlReport, models: Sequence[_Model]) -> None:
    rep.heading("Byte-realizable attack (traffic)")
    traffic = next((m for m in models if m.name == "traffic"), None)
    real = (traffic.robustness or {}).get("realizable") if traffic is not None else None
    if not real or _skipped(real):
        rep.paragraph(f"Not run: {_skipped(real) or 'no traffic robustness report'}.")
        return
    labels = {"append": "a TLS application-data record appended after the payload",
              "client_hello": "the ClientHello random and session id rewritten"}
    for strategy, res in real.items():
        if _skipped(res):
            rep.paragraph(f"{labels.get(strategy, strategy)}: not possible here ({_skipped(res)}).")
            continue
        missing = [k for k in ("n_round_tripped", "n_flows", "realizability_rate", "miss_rate_clean", "n_detected_clean",
                               "attack_success_rate_after_round_trip") if k not in res]
        if missing:
            rep.paragraph(f"{labels.get(strategy, strategy)}: this robustness record lacks {', '.join(missing)} (written "
                          "by another pcapvision version); see the traffic robustness report.")
            continue
        rep.paragraph(
            f"{labels.get(strategy, strategy)}: the attack changes only bytes a sender controls, writes them into a real "
            f"capture, re-ingests and re-renders it; {res['n_round_tripped']} of {res['n_flows']} flows round-tripped "
            f"({res['realizability_rate']:.0%} realized). Missed before the attack: {res['miss_rate_clean']:.0%}; of "
            f"the {res['n_detected_clean']} flows detected before it, {res['attack_success_rate_after_round_trip']:.0%} "
            "evade through the real capture. This is the figure that says whether an attacker can evade the traffic "
            "model with packets, not just with pixels.")
