"""The leaderboard: per-seed results -> mean/std rows, the verdict, leaderboard.csv and .html."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pcapvision.io import write_text_atomic
from pcapvision.report import HtmlReport

METRICS = ("macro_f1", "positive_f1", "positive_fpr", "roc_auc", "accuracy")
KIND_ORDER = {"model": 0, "reference": 1, "baseline": 2}


def _mean_std(values: Sequence[Any]) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per model/baseline/reference: test mean and std over seeds, validation macro-F1 mean."""
    rows = []
    names = list(dict.fromkeys(r["model"] for r in results))
    for name in names:
        runs = [r for r in results if r["model"] == name]
        row: dict[str, Any] = {"model": name, "kind": runs[0]["kind"], "representation": runs[0]["representation"],
                               "arch": runs[0]["arch"], "seeds": len(runs)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r["test"].get(metric) for r in runs])
        row["validation_macro_f1_mean"] = _mean_std([r["validation"]["macro_f1"] for r in runs])[0]
        row["train_seconds_mean"] = _mean_std([r["train_seconds"] for r in runs])[0]
        row["inference_images_per_s_mean"] = _mean_std([r["inference_per_s"] for r in runs])[0]
        row["what"] = runs[0]["what"] if runs[0]["kind"] != "model" else f"{runs[0]['arch']} on {runs[0]['representation']} images"
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_kind"] = table["kind"].map(KIND_ORDER)
    table = table.sort_values(["_kind", "macro_f1_mean"], ascending=[True, False], kind="stable").drop(columns="_kind")
    return table.reset_index(drop=True)


def _best(table: pd.DataFrame, kind: str) -> pd.Series | None:
    """The entry of ``kind`` with the highest mean *validation* macro-F1 (never chosen on test rows)."""
    sub = table[table["kind"] == kind]
    if sub.empty:
        return None
    return sub.loc[sub["validation_macro_f1_mean"].astype(float).idxmax()]


def verdict(table: pd.DataFrame, margin_points: float = 3.0) -> dict[str, Any]:
    """The plain verdict: the best model and best baseline, each chosen on validation, compared on test."""
    model, baseline, reference = _best(table, "model"), _best(table, "baseline"), _best(table, "reference")
    record: dict[str, Any] = {"selection": "best model and best baseline chosen by mean macro-F1 on the validation "
                                           "groups; compared by mean macro-F1 on the held-out test groups",
                              "margin_points": margin_points}
    if model is None or baseline is None:
        record["text"] = "nothing to compare: the grid holds no model or no baseline"
        return record
    gap = 100 * (model["macro_f1_mean"] - baseline["macro_f1_mean"])
    record.update(best_model=model["model"], best_baseline=baseline["model"], gap_points=gap,
                  best_model_macro_f1=model["macro_f1_mean"], best_baseline_macro_f1=baseline["macro_f1_mean"],
                  model_beats_baselines=bool(gap >= margin_points))
    if gap >= margin_points:
        text = (f"The best model ({model['model']}) beats the best baseline ({baseline['model']}) by {gap:.1f} "
                f"macro-F1 points on held-out groups ({model['macro_f1_mean']:.3f} vs {baseline['macro_f1_mean']:.3f}).")
    else:
        text = (f"No model beats the baselines by {margin_points:g} points: the best model ({model['model']}) scores "
                f"{model['macro_f1_mean']:.3f} macro-F1 on held-out groups, the best baseline ({baseline['model']}) "
                f"{baseline['macro_f1_mean']:.3f} ({gap:+.1f} points).")
    if reference is not None:
        ref_gap = 100 * (model["macro_f1_mean"] - reference["macro_f1_mean"])
        record.update(reference_macro_f1=reference["macro_f1_mean"], gap_to_reference_points=ref_gap)
        text += (f" The per-flow statistics reference scores {reference['macro_f1_mean']:.3f}: the best image model is "
                 f"{abs(ref_gap):.1f} points {'above' if ref_gap >= 0 else 'below'} it.")
    record["text"] = text
    return record


def write_leaderboard(out_dir: Path, table: pd.DataFrame, record: dict[str, Any]) -> tuple[Path, Path]:
    """``leaderboard.csv`` (every column) and the self-contained ``leaderboard.html``."""
    csv_path = write_text_atomic(out_dir / "leaderboard.csv", table.to_csv(index=False, float_format="%.6g"))
    rep = HtmlReport("pcapvision compare: leaderboard")
    v = record["verdict"]
    rep.paragraph(v["text"], "note" if v.get("model_beats_baselines") else "bad")
    rep.paragraph(f"Selection: {v['selection']}. Figures: mean ± std over {record['params']['seeds']} seeds on the test "
                  f"groups ({record['split']['n_test']} flows; the malicious-class F1 and false-positive rate at "
                  "the operating threshold p >= 0.5). Bold: the best model and the best baseline.")
    for note in record.get("notes", []):
        rep.note(note)
    best = {v.get("best_model"), v.get("best_baseline")}

    def fmt(row: pd.Series, metric: str) -> str:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        return "n/a" if mean is None or pd.isna(mean) else f"{mean:.3f} ± {std:.3f}"

    rows = []
    for _, row in table.iterrows():
        rows.append({"model": row["model"], "kind": row["kind"], "macro-F1": fmt(row, "macro_f1"),
                     "malicious F1": fmt(row, "positive_f1"), "FPR": fmt(row, "positive_fpr"),
                     "ROC-AUC": fmt(row, "roc_auc"), "validation macro-F1": row["validation_macro_f1_mean"],
                     "train s": "n/a" if pd.isna(row["train_seconds_mean"]) else f"{row['train_seconds_mean']:.1f}",
                     "inference images/s": "n/a" if pd.isna(row["inference_images_per_s_mean"])
                     else f"{row['inference_images_per_s_mean']:.0f}"})
    rep.table(rows, caption="test groups; sorted by kind, then test macro-F1")
    split = record["split"]
    rep.heading("Split (shared by every row)")
    rep.paragraph(split["rule"])
    rep.table([{"split": name, "flows": split[f"n_{name}"], "groups": len(split["groups"][name]),
                **split["class_counts"][name]} for name in ("train", "validation", "test")])
    html_text = rep.render()
    for name in best:  # bold the chosen rows (the report escapes cell text, so mark them after rendering)
        if name:
            cell = f"<td>{html.escape(name)}</td>"
            html_text = html_text.replace(f"<tr>{cell}", f"<tr style=\"font-weight:bold\">{cell}", 1)
    html_path = write_text_atomic(out_dir / "leaderboard.html", html_text)
    return csv_path, html_path
