"""Matplotlib figures of the robustness report (``matplotlib.figure.Figure``, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def severity_curves(rows: Sequence[Mapping[str, Any]], title: str = "Accuracy under distortions") -> Figure:
    """Accuracy vs severity, one line per distortion (rows from ``severity_sweep``)."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    names = list(dict.fromkeys(r["distortion"] for r in rows))
    for name in names:
        pts = sorted((r["severity"], r["accuracy"]) for r in rows if r["distortion"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xlabel="severity (0 = clean)", ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def epsilon_curves(rows: Sequence[Mapping[str, Any]], norm: str, title: str) -> Figure:
    """Robust accuracy vs eps for every attack of ``norm`` ('inf' or '2'), eps 0 = clean."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["norm"] == norm and r["attack"] != "deepfool"))
    for name in attacks:
        sel = [r for r in rows if r["attack"] == name]
        pts = sorted({(0.0, sel[0]["clean_accuracy"])} | {(r["eps"], r["robust_accuracy"]) for r in sel})
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xlabel=f"epsilon (L{'inf' if norm == 'inf' else '2'}, pixels in [0, 1])", ylabel="robust accuracy",
           title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def radius_curve(rows: Sequence[Mapping[str, Any]], key: str, title: str) -> Figure:
    """Accuracy vs L2 radius (certified accuracy, or DeepFool's upper bound)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot([r["radius_l2"] for r in rows], [r[key] for r in rows], marker="o")
    ax.set(xlabel="L2 radius", ylabel=key.replace("_", " "), title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return fig


def _show(ax: Any, image: np.ndarray, cmap: str = "gray", vmin: float = 0.0, vmax: float = 1.0) -> None:
    ax.imshow(np.squeeze(image), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def adversarial_rows(
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    pred_clean: np.ndarray,
    pred_adv: np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """Three rows: originals, adversarial images, differences (L2 norm under each)."""
    n = len(x)
    fig = Figure(figsize=(1.3 * max(n, 2), 4.6))
    axes = fig.subplots(3, max(n, 2), squeeze=False)
    delta = (x_adv - x).reshape(n, -1)
    bound = float(np.abs(delta).max()) or 1.0
    for i in range(max(n, 2)):
        if i >= n:
            for r in range(3):
                axes[r, i].axis("off")
            continue
        _show(axes[0, i], x[i])
        axes[0, i].set_title(f"{class_names[y[i]]}->{class_names[pred_clean[i]]}", fontsize=7)
        _show(axes[1, i], x_adv[i])
        axes[1, i].set_title(f"adv: {class_names[pred_adv[i]]}", fontsize=7)
        _show(axes[2, i], x_adv[i] - x[i], cmap="seismic", vmin=-bound, vmax=bound)
        axes[2, i].set_xlabel(f"L2 {np.linalg.norm(delta[i]):.2f}", fontsize=7)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("adversarial", fontsize=8)
    axes[2, 0].set_ylabel("difference", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def fooling_grid(images: np.ndarray, targets: np.ndarray, confidence: np.ndarray, class_names: Sequence[str],
                 per_class: int = 3) -> Figure:
    """Fooling images, one column per target class, the model's confidence under each."""
    classes = list(dict.fromkeys(int(t) for t in targets))
    fig = Figure(figsize=(1.2 * max(len(classes), 2), 1.35 * per_class + 0.4))
    axes = fig.subplots(per_class, max(len(classes), 2), squeeze=False)
    for c, k in enumerate(classes):
        idx = np.flatnonzero(targets == k)[:per_class]
        for r in range(per_class):
            ax = axes[r, c]
            if r < len(idx):
                _show(ax, images[idx[r]])
                ax.set_xlabel(f"{class_names[k]} {confidence[idx[r]]:.3f}", fontsize=7)
            else:
                ax.axis("off")
    for c in range(len(classes), axes.shape[1]):
        for r in range(per_class):
            axes[r, c].axis("off")
    fig.suptitle("Fooling images: target class and the model's confidence in it", fontsize=9)
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix with counts."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    fig = Figure(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax = fig.add_subplot()
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set(xlabel="predicted under attack", ylabel="true class", title=title)
    return fig


__all__ = ["adversarial_rows", "confusion_figure", "epsilon_curves", "fooling_grid", "radius_curve", "severity_curves"]
