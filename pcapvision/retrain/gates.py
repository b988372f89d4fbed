"""Promotion gates: may the challenger replace the champion? Each gate states both figures.

Every figure is measured on the same holdout rows for both models. In binary mode the F1 and
false-positive-rate gates read the positive class ('malicious'); with more classes they read
macro-F1 and the largest per-class false-positive rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pcapvision.retrain.config import Gates


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the gates read, from a classification-metrics record."""
    if "positive" in metrics:
        pos = metrics["positive"]
        f1_name, f1 = f"{pos['class']}_f1", pos["f1"]
        fpr_name, fpr = f"{pos['class']}_false_positive_rate", pos["false_positive_rate"] or 0.0
    else:
        f1_name, f1 = "macro_f1", metrics["macro"]["f1"]
        fpr_name = "max_class_false_positive_rate"
        fpr = max((c["false_positive_rate"] or 0.0) for c in metrics["per_class"].values())
    return {"f1_name": f1_name, "f1": float(f1), "fpr_name": fpr_name, "fpr": float(fpr),
            "accuracy": float(metrics["accuracy"]), "macro_f1": float(metrics["macro"]["f1"]),
            "n_samples": int(metrics["n_samples"])}


def _gate(name: str, passed: bool, challenger: float, champion: float | None, rule: str) -> dict[str, Any]:
    return {"gate": name, "passed": bool(passed), "challenger": challenger, "champion": champion, "rule": rule}


def evaluate_gates(
    gates: Gates,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    baselines: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One result per gate. ``challenger``/``champion``: :func:`headline` figures plus
    ``robust_accuracy``; ``champion`` None on the first run (only the baseline gate applies)."""
    results = []
    if champion is not None:
        results.append(_gate(
            challenger["f1_name"], challenger["f1"] >= champion["f1"] - gates.max_f1_drop,
            challenger["f1"], champion["f1"], f"challenger >= champion - {gates.max_f1_drop:g}"))
        results.append(_gate(
            challenger["fpr_name"], challenger["fpr"] <= champion["fpr"] + gates.max_fpr_rise,
            challenger["fpr"], champion["fpr"], f"challenger <= champion + {gates.max_fpr_rise:g}"))
        results.append(_gate(
            "fgsm_robust_accuracy",
            challenger["robust_accuracy"] >= champion["robust_accuracy"] - gates.max_robust_accuracy_drop,
            challenger["robust_accuracy"], champion["robust_accuracy"],
            f"challenger >= champion - {gates.max_robust_accuracy_drop:g}"))
    if gates.beat_baselines:
        if baselines:
            best = max(baselines, key=lambda row: row["macro_f1"])
            results.append({**_gate(
                "macro_f1_vs_best_baseline", challenger["macro_f1"] > best["macro_f1"], challenger["macro_f1"], None,
                f"challenger > best trivial baseline ('{best['baseline']}': {best['macro_f1']:.4f})"),
                "baseline": best["baseline"], "baseline_value": best["macro_f1"]})
        else:
            results.append(_gate("macro_f1_vs_best_baseline", False, challenger["macro_f1"], None,
                                 "no baseline could be fitted on the training rows"))
    return results


def failed(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per failed gate, with both figures."""
    out = []
    for r in results:
        if r["passed"]:
            continue
        if r["champion"] is not None:
            out.append(f"gate {r['gate']} failed: challenger {r['challenger']:.4f} vs champion {r['champion']:.4f} "
                       f"(rule: {r['rule']})")
        else:
            out.append(f"gate {r['gate']} failed: challenger {r['challenger']:.4f} (rule: {r['rule']})")
    return out


__all__ = ["evaluate_gates", "failed", "headline"]
