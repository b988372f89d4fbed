"""Figures of the model report (matplotlib, Agg backend): each function returns a Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Mapping[str, Any]) -> Any:
    """Loss and accuracy per epoch, train vs validation, with the restored best epoch marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric, title in ((axes[0], "loss", "Loss (cross-entropy)"), (axes[1], "accuracy", "Accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], "o-", label="train", ms=3)
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "s-", label="validation", ms=3)
        best = history.get("best_epoch")
        if best:
            ax.axvline(best, color="grey", ls=":", lw=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str]) -> Any:
    """Counts with row-normalised colour (rows: true class, columns: predicted)."""
    plt = _plt()
    cm = np.asarray(cm)
    k = len(class_names)
    size = max(3.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if k > 6 else 10,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig


def roc_pr_curves(curve_points: Mapping[str, Mapping[str, np.ndarray]], metrics: Mapping[str, Any]) -> Any:
    """ROC and precision-recall curves, one line per class (binary: the positive class)."""
    plt = _plt()
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    per_class = metrics.get("per_class", {})
    for name, pts in curve_points.items():
        auc = per_class.get(name, {}).get("roc_auc")
        ap = per_class.get(name, {}).get("pr_auc")
        roc_ax.plot(pts["fpr"], pts["tpr"], lw=1.3, label=f"{name} (AUC {auc:.3f})" if auc is not None else name)
        pr_ax.plot(pts["recall"], pts["precision"], lw=1.3, label=f"{name} (AP {ap:.3f})" if ap is not None else name)
    # Log-scale FPR: for a detector the region that matters (FPR 1e-3..1e-2) is invisible on a linear axis.
    positive_fprs = [f for pts in curve_points.values() for f in np.asarray(pts["fpr"]) if f > 0]
    low = min(min(positive_fprs, default=1e-3), 1e-2)  # at least two decades
    grid = np.logspace(np.log10(low), 0, 50)
    roc_ax.plot(grid, grid, color="grey", ls=":", lw=1, label="chance")
    roc_ax.set_xscale("log")
    roc_ax.set(xlabel="false positive rate (log scale)", ylabel="true positive rate", title="ROC (one vs rest)",
               xlim=(low, 1), ylim=(0, 1.01))
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (one vs rest)", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    fig.tight_layout()
    return fig


def image_grid(
    images: np.ndarray, titles: Sequence[str], *, columns: int = 8, row_labels: Sequence[str] | None = None, cmap: str = "gray"
) -> Any:
    """A grid of 28x28 images (float [0,1] or uint8) with small titles, drawn as ONE mosaic.

    One ``imshow`` of a tiled array instead of one axes per image: 80 subplots took ~10 s to save.
    """
    plt = _plt()
    imgs = [np.asarray(img, dtype=np.float32).squeeze() for img in images]
    if imgs and np.asarray(images[0]).dtype.kind != "f":
        imgs = [img / 255.0 for img in imgs]
    n = len(imgs)
    h, w = imgs[0].shape if n else (28, 28)
    rows = max(1, int(np.ceil(n / columns)))
    gap = 2
    band = 14 if any(titles) else 0  # blank rows above each image row for its titles
    step_y, step_x = band + h + gap, w + gap
    mosaic = np.full((rows * step_y - gap, columns * step_x - gap), np.nan, dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, columns)
        mosaic[r * step_y + band: r * step_y + band + h, c * step_x: c * step_x + w] = img
    scale = 0.95 if band else 0.7
    fig, ax = plt.subplots(figsize=(scale * columns + (0.8 if row_labels else 0), scale * rows * step_y / step_x))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(mosaic, cmap=colormap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i, title in enumerate(titles[:n]):
        r, c = divmod(i, columns)
        ax.text(c * step_x + w / 2, r * step_y + band - 1, title, ha="center", va="bottom", fontsize=6)
    if row_labels:
        ax.set_yticks([r * step_y + band + h / 2 for r in range(min(rows, len(row_labels)))], list(row_labels)[:rows], fontsize=8)
    fig.tight_layout()
    return fig


def samples_per_class(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], per_class: int = 8, seed: int = 0) -> Any:
    """``per_class`` random inputs of each class, one row per class."""
    rng = np.random.default_rng(seed)
    picked, titles, row_labels = [], [], []
    for k, name in enumerate(class_names):
        idx = np.flatnonzero(np.asarray(y) == k)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else np.array([], int)
        row = [x[i] for i in chosen] + [np.zeros_like(x[0])] * (per_class - len(chosen))
        picked.extend(row)
        titles.extend([""] * per_class)  # the row label names the class
        row_labels.append(name[:14])
    return image_grid(np.asarray(picked), titles, columns=per_class, row_labels=row_labels)


def worst_misclassified(
    x: np.ndarray, y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str], count: int = 16,
    y_pred: np.ndarray | None = None,
) -> tuple[Any, list[dict[str, Any]]] | tuple[None, list]:
    """The misclassified inputs the model was most confident about, with a table of them.

    ``y_pred`` defaults to the argmax; pass the operating-point predictions for binary models.
    """
    y_pred = proba.argmax(axis=1) if y_pred is None else np.asarray(y_pred)
    wrong = np.flatnonzero(y_pred != y_true)
    if len(wrong) == 0:
        return None, []
    confidence = proba[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:count]
    titles = [f"{class_names[y_true[i]][:9]}→\n{class_names[y_pred[i]][:9]} {proba[i, y_pred[i]]:.2f}" for i in order]
    rows = [
        {"index": int(i), "true": class_names[y_true[i]], "predicted": class_names[y_pred[i]],
         "p(predicted)": float(proba[i, y_pred[i]]), "p(true)": float(proba[i, y_true[i]])}
        for i in order
    ]
    return image_grid(x[order], titles, columns=8), rows
