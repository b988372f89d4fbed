"""``robustness.html``: the suite's record as one self-contained page (pcapvision.report.HtmlReport)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.report import HtmlReport
from pcapvision.robustness import plots
from pcapvision.robustness.attacks import decide

N_EXAMPLE_COLUMNS = 8


def _skipped(rep: HtmlReport, section: Any) -> bool:
    if isinstance(section, dict) and "skipped" in section:
        rep.note(f"Skipped: {section['skipped']}")
        return True
    return False


def example_order(y: np.ndarray, pred_clean: np.ndarray, pred_adv: np.ndarray) -> np.ndarray:
    """Indices of the examples to show: first those the attack flipped from right to wrong."""
    flipped = np.flatnonzero((pred_clean == y) & (pred_adv != y))
    return np.concatenate([flipped, np.setdiff1d(np.arange(len(y)), flipped)])[:N_EXAMPLE_COLUMNS]


def write_report(path: str | os.PathLike[str], record: dict[str, Any], *, x_att: np.ndarray, y_att: np.ndarray,
                 proba_att: np.ndarray, report_result: Any, fooling: Any, binary: Any = None) -> Path:
    """Write the HTML report of a suite ``record`` (figures drawn from the arrays given)."""
    names = record["model"]["class_names"]
    data = record["data"]
    rep = HtmlReport(f"pcapvision robustness: {Path(record['model']['dir']).name}")
    rep.paragraph(f"Model {record['model']['dir']} ({record['model'].get('arch') or 'unknown arch'}), "
                  f"data: {data.get('path') or data['name']} - {data['split']}; {data['n_eval']} images for distortions, "
                  f"{data['n_attacked']} attacked. Suite {record['params']['suite']!r}, seed {record['params']['seed']}.")
    if data.get("is_sample"):
        rep.note("MNIST here is a sample, not the full 70k set: numbers are not directly comparable with the literature.")
    rep.heading("Summary")
    rep.table(record["summary"])

    rep.heading("Distortions (pixel space)")
    rep.figure(plots.severity_curves(record["distortions"]), caption="Accuracy per severity (0 = clean)")
    rep.table(_pivot(record["distortions"]), caption="Accuracy by distortion and severity")

    rep.heading("Network-level distortions (flow re-rendered)")
    traffic = record["traffic_distortions"]
    if not _skipped(rep, traffic):
        rep.figure(plots.severity_curves(traffic["rows"], "Accuracy under network-level distortions"),
                   caption="Each distortion changes the flow (bytes, packets, times), which is then re-rendered")
        rep.table(_pivot(traffic["rows"]))

    rep.heading("Adversarial attacks (ART)")
    rep.paragraph(record["attack_note"])
    rows = record["attacks"]
    rep.figure(plots.epsilon_curves(rows, "inf", "Robust accuracy vs Linf budget"), caption="FGSM and PGD-Linf")
    rep.figure(plots.epsilon_curves(rows, "2", "Robust accuracy vs L2 budget"), caption="PGD-L2")
    keys = ["attack", "eps", "steps", "step_size", "random_restarts", "robust_accuracy", "attack_success_rate",
            "malicious_to_normal_evasion_rate", "error_rate_after_attack_unconditioned", "seconds"]
    rep.table([{k: _fmt(r.get(k, "")) for k in keys if k in r or k in ("attack", "eps")}
               | {"median L0": r["norm_l0"]["median"], "median L2": r["norm_l2"]["median"],
                  "max Linf": r["norm_linf"]["max"]} for r in rows])
    rep.table([{"true class": k, "attacked": v["n"], "flipped": v["n_flipped"],
                "most often turned into": v.get("most_common_adversarial_class", "-")}
               for k, v in _report_per_class(record).items()],
              caption=f"Per class under {record['confusion_under_attack']['attack']} eps "
                      f"{record['confusion_under_attack']['eps']:g}")
    res = report_result
    pred_clean = decide(proba_att, binary)
    pred_adv = decide(res.proba_adv, binary)
    order = example_order(y_att, pred_clean, pred_adv)
    rep.figure(plots.adversarial_rows(x_att[order], res.x_adv[order], y_att[order], pred_clean[order], pred_adv[order],
                                      names, f"{res.spec.name} eps {res.spec.eps:g}: original / adversarial / difference"),
               caption="Titles: true->clean prediction; adversarial prediction; L2 norm of the difference under it")
    cm = record["confusion_under_attack"]
    rep.figure(plots.confusion_figure(np.asarray(cm["matrix"]), names, f"Confusion under {cm['attack']} eps {cm['eps']:g}"),
               caption="Rows: true class; columns: prediction on the adversarial image (counts; colour = row share)")

    rep.heading("Minimal-norm attack (DeepFool, L2)")
    mn = record["minimal_norm"]
    rep.paragraph(f"DeepFool (max {mn.get('max_iter')} iterations, overshoot {mn.get('overshoot')}) on {mn['n_attacked']} "
                  f"images: success on {mn['attack_success_rate']:.1%} of those classified correctly before; median L2 "
                  f"{mn['norm_l2']['median']:.3f}, median Linf {mn['norm_linf']['median']:.3f}.")
    rep.figure(plots.radius_curve(mn["accuracy_at_l2_radius"], "robust_accuracy_upper_bound",
                                  "Accuracy within an L2 radius (DeepFool upper bound)"))

    rep.heading("Fooling images and pure noise")
    fo = record["fooling"]
    s = fo["summary"]
    rep.paragraph(f"From uniform noise, signed-gradient ascent (step {s['step_size']}, at most {s['max_steps']} steps) on "
                  f"a class's log-probability: {s['success_rate']:.1%} reach p >= {s['threshold']}. On pure uniform noise "
                  f"the model's mean maximum confidence is {fo['noise_confidence']['mean_max_confidence']:.3f}.")
    rep.figure(plots.fooling_grid(fooling.images, fooling.target, fooling.confidence, names,
                                  per_class=min(3, max(1, int(np.bincount(fooling.target).max())))))
    rep.table(fo["per_class"])
    rep.heading("Noise class (retrained with an extra 'noise' class)", level=3)
    if not _skipped(rep, record["noise_class"]):
        rep.table([{"measure": k, "value": _fmt(v)} for k, v in record["noise_class"].items()])

    rep.heading("Defences")
    d = record["defences"]
    if not _skipped(rep, d):
        rep.paragraph(f"Each defence fine-tunes a copy of the model (eps {d['eps']:g}); evaluation attack: {d['evaluation_attack']}.")
        rep.table(d["table"], caption="Clean vs robust accuracy before (standard) and after each defence")
        for run in d["training"]:
            rep.table(run["history"], caption=f"{run['method']}: per-epoch check (PGD on the validation slice carved from the training data)"
                      + ("; stopped early: catastrophic overfitting" if run["stopped_early_catastrophic_overfitting"] else ""))

    rep.heading("Randomized smoothing certification")
    c = record["certification"]
    rep.paragraph(f"Cohen et al. via ART: sigma {c['sigma']}, n {c['n']}, alpha {c['alpha']}, {c['n_samples']} images; "
                  f"abstained on {c['abstain_rate']:.1%}. {c['model']}. With n={c['n']} draws no radius above "
                  f"{c['max_certifiable_radius']:.2f} can be certified.")
    rep.figure(plots.radius_curve(c["certified_accuracy"], "certified_accuracy", "Certified accuracy vs L2 radius"))

    rep.heading("Byte-realizable attack")
    real = record["realizable"]
    if not _skipped(rep, real):
        labels = {"append": "one TLS application-data record appended after the payload",
                  "client_hello": "the ClientHello random and session id rewritten"}
        for strategy, res in real.items():
            rep.heading(labels.get(strategy, strategy), level=3)
            if _skipped(rep, res):
                continue
            rep.paragraph(f"PGD restricted to those bytes, values on the k/255 grid, then written into a capture, "
                          f"re-ingested and re-rendered: {res['n_round_tripped']} of {res['n_flows']} flows round-tripped; "
                          f"realizability rate {res['realizability_rate']:.1%} "
                          f"({res.get('realizability_check', 'image comparison')}). Decided at the operating point, "
                          f"{res['n_detected_clean']} flows were classified correctly before the attack "
                          f"(clean miss rate {res['miss_rate_clean']:.1%}); of those, the attack flipped "
                          f"{res['attack_success_rate_adversarial_images']:.1%} on the adversarial images and "
                          f"{res['attack_success_rate_after_round_trip']:.1%} after the round trip.")
            rep.table(res["flows"][:50])
    rep.heading("Provenance")
    rep.preformatted("\n".join(f"{k}: {v}" for k, v in record["library_versions"].items()))
    return rep.save(path)


def _report_per_class(record: dict[str, Any]) -> dict[str, Any]:
    cm = record["confusion_under_attack"]
    for r in record["attacks"]:
        if r["attack"] == cm["attack"] and r["eps"] == cm["eps"]:
            return r["per_class"]
    return {}


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def _pivot(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = table.setdefault(r["distortion"], {"distortion": r["distortion"], "parameter": r.get("parameter") or ""})
        entry[f"s{r['severity']}"] = round(r["accuracy"], 4)
        if r["severity"] and r.get("value") is not None:
            entry["parameter"] = f"{r['parameter']}"
    return list(table.values())
