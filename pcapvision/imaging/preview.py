"""A PNG grid of sample images per class: look at what the model will see."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from pcapvision.io import atomic_path
from pcapvision.validation import check_int, check_positive_int


def preview_grid(
    images_path_or_table: str | os.PathLike[str] | pa.Table,
    output_png: str | os.PathLike[str],
    per_class: int = 8,
    seed: int = 0,
) -> Path:
    """Draw up to ``per_class`` random images of each label (one row per label) into a PNG.

    Pixels are shown as stored, 0 black to 255 white, without smoothing; each row is headed by
    the label and its number of images, each tile by the flow's family (when set).
    """
    check_positive_int("per_class", per_class)
    check_int("seed", seed, min_value=0)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from pcapvision.imaging.table import load_images

    x, y, meta = load_images(images_path_or_table, target="label")
    images = np.rint(x[..., 0] * 255).astype(np.uint8)
    families = meta.columns["family"].fillna("").astype(str).to_numpy() if "family" in meta.columns else np.full(len(y), "")
    labels = sorted(set(y.tolist())) or ["(no images)"]
    rng = np.random.default_rng(seed)
    columns = per_class
    fig, axes = plt.subplots(
        len(labels), columns, figsize=(1.15 * columns + 1.6, 1.3 * len(labels) + 0.7), squeeze=False,
    )
    for r, label in enumerate(labels):
        rows = np.flatnonzero(y == label)
        chosen = np.sort(rng.choice(rows, size=min(per_class, rows.size), replace=False)) if rows.size else rows
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < chosen.size:
                ax.imshow(images[chosen[c]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                if families[chosen[c]]:
                    ax.set_title(families[chosen[c]], fontsize=7, pad=2)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(f"{label or '(no label)'}\nn={rows.size}", fontsize=9, rotation=0, ha="right", va="center")
    title = f"{meta.representation or 'images'} {meta.params}" if meta.params else str(meta.representation or "images")
    fig.suptitle(f"{title}: {per_class} random images per label (seed {seed})", fontsize=9)
    fig.tight_layout()
    with atomic_path(output_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(output_png)
