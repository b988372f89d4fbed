"""Pixel-space corruptions as severity sweeps (in the spirit of MNIST-C), vectorised over a batch.

Each distortion maps float32 images (N, H, W, C) in [0, 1] to images of the same shape in
[0, 1]; severity 1..5 picks one of five increasing parameters. Randomness comes from the
``numpy.random.Generator`` passed in, so a sweep is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from pcapvision.validation import check_choice, check_int

Distortion = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma^2) noise to every pixel."""
    return x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32)


def salt_and_pepper(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Set a ``fraction`` of pixels to 0 or 1 (half each)."""
    u = rng.random(x.shape)
    out = x.copy()
    out[u < fraction / 2] = 0.0
    out[(u >= fraction / 2) & (u < fraction)] = 1.0
    return out


def gaussian_blur(x: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Blur each image with a Gaussian of ``sigma_px`` pixels (not across images or channels)."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma_px, sigma_px, 0), mode="constant")


def rotation(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate by +-``degrees`` (sign drawn per image) about the centre, zero fill."""
    sign = rng.choice([-1.0, 1.0], size=len(x))
    out = np.empty_like(x)
    for s in (-1.0, 1.0):
        idx = np.flatnonzero(sign == s)
        if len(idx):
            out[idx] = ndimage.rotate(x[idx], s * degrees, axes=(1, 2), reshape=False, order=1, mode="constant")
    return out


def translation(x: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    """Shift by ``pixels`` in a direction (up/down/left/right) drawn per image, zero fill."""
    shift = int(round(pixels))
    direction = rng.integers(0, 4, size=len(x))
    out = np.empty_like(x)
    offsets = [(shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    for d, (dy, dx) in enumerate(offsets):
        idx = np.flatnonzero(direction == d)
        if len(idx):
            out[idx] = ndimage.shift(x[idx], (0, dy, dx, 0), order=0, mode="constant")
    return out


def occlusion(x: np.ndarray, side_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero a square of ``side_px`` pixels at a random position in each image."""
    n, h, w = x.shape[:3]
    side = int(round(side_px))
    top = rng.integers(0, h - side + 1, size=n)
    left = rng.integers(0, w - side + 1, size=n)
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    box = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(box[..., None], 0.0, x).astype(np.float32)


def brightness(x: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``delta`` to every pixel."""
    return x + np.float32(delta)


def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each image's deviation from its own mean by ``factor`` (< 1 lowers contrast)."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * np.float32(factor) + mean


# name -> (function, parameter name, the parameter at severities 1..5)
DISTORTIONS: dict[str, tuple[Distortion, str, tuple[float, ...]]] = {
    "gaussian_noise": (gaussian_noise, "sigma", (0.1, 0.2, 0.3, 0.4, 0.5)),
    "salt_and_pepper": (salt_and_pepper, "fraction", (0.02, 0.05, 0.1, 0.2, 0.3)),
    "gaussian_blur": (gaussian_blur, "sigma_px", (0.5, 1.0, 1.5, 2.0, 3.0)),
    "rotation": (rotation, "degrees", (10.0, 20.0, 30.0, 45.0, 60.0)),
    "translation": (translation, "pixels", (1.0, 2.0, 3.0, 4.0, 6.0)),
    "occlusion": (occlusion, "side_px", (4.0, 7.0, 10.0, 13.0, 16.0)),
    "brightness": (brightness, "delta", (0.1, 0.2, 0.3, 0.4, 0.5)),
    "contrast": (contrast, "factor", (0.8, 0.6, 0.4, 0.3, 0.2)),
}


def distort(x: np.ndarray, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """Apply distortion ``name`` at ``severity`` (0 = unchanged, 1..5) and clip to [0, 1]."""
    check_choice("distortion", name, DISTORTIONS)
    severity = check_int("severity", severity, min_value=0, max_value=5)
    x = np.asarray(x, np.float32)
    if severity == 0:
        return x.copy()
    func, _, levels = DISTORTIONS[name]
    rng = np.random.default_rng([seed, severity, sorted(DISTORTIONS).index(name)])
    return np.clip(func(x, levels[severity - 1], rng), 0.0, 1.0).astype(np.float32)


def severity_sweep(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Accuracy per distortion and severity 0..5; ``predict`` maps images to class ids."""
    rows: list[dict[str, Any]] = []
    y = np.asarray(y)
    clean_acc = float((predict(x) == y).mean())
    for name in names if names is not None else DISTORTIONS:
        _, param, levels = DISTORTIONS[name]
        rows.append({"distortion": name, "severity": 0, "parameter": param, "value": None, "accuracy": clean_acc})
        for severity in range(1, 6):
            acc = float((predict(distort(x, name, severity, seed=seed)) == y).mean())
            rows.append({"distortion": name, "severity": severity, "parameter": param,
                         "value": levels[severity - 1], "accuracy": acc})
    return rows


__all__ = ["DISTORTIONS", "distort", "severity_sweep"]
