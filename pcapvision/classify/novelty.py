"""Is a flow like the training data? Nearest-neighbour distance in the model's own embedding.

The embedding is the input of the model's output layer (the 128 units of ``dense1`` for the
CNN, after dropout, which is off at inference). A :class:`Reference` keeps the embeddings of
(up to ``max_points``) training images and a threshold: the ``quantile`` (99th percentile by
default) of each reference point's distance to its nearest *other* reference point. A new image
whose nearest reference embedding is further away than that is flagged out of distribution: by
construction about 1% of training-like images are, so a share far above 1% means new data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.errors import ModelFormatError
from pcapvision.io import atomic_path
from pcapvision.validation import check_number, check_positive_int

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.npz"
_CHUNK = 1024


def embed(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Embeddings (N, D) float32: what the model's output layer receives."""
    import keras

    head = model.layers[-1]
    extractor = keras.Model(model.inputs, head.input)
    if len(x) == 0:
        return np.zeros((0, int(head.input.shape[-1])), dtype=np.float32)
    return np.asarray(extractor.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0), dtype=np.float32)


def nearest_distances(queries: np.ndarray, points: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each query to its nearest point (chunked; ``exclude_self`` when the
    queries are the points themselves and the zero self-distance must not count)."""
    queries = np.asarray(queries, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.full(len(queries), np.inf)
    p2 = (points ** 2).sum(axis=1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), _CHUNK):
        q = queries[start:start + _CHUNK]
        d2 = (q ** 2).sum(axis=1)[:, None] + p2[None, :] - 2.0 * q @ points.T
        if exclude_self:
            rows = np.arange(len(q))
            d2[rows, start + rows] = np.inf
        out[start:start + len(q)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


@dataclass
class Reference:
    """Training embeddings and the distance beyond which an image counts as unlike them."""

    embeddings: np.ndarray  # (M, D) float32
    threshold: float
    quantile: float
    model_sha256: str

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Distance of each embedding to the nearest reference embedding."""
        return nearest_distances(embeddings, self.embeddings)

    def score(self, model: Any, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """``(distance, in_distribution)`` per image of ``x`` under ``model`` (the reference's model)."""
        distance = self.distances(embed(model, x, batch_size=batch_size))
        return distance, distance <= self.threshold

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the reference as ``.npz`` (no pickles) atomically."""
        with atomic_path(path, keep_suffix=True) as tmp:
            np.savez_compressed(tmp, embeddings=self.embeddings, threshold=np.float64(self.threshold),
                                quantile=np.float64(self.quantile), model_sha256=np.asarray(self.model_sha256))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reference:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(np.asarray(data["embeddings"], dtype=np.float32), float(data["threshold"]),
                           float(data["quantile"]), str(data["model_sha256"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"{path}: not a pcapvision embedding reference ({exc.__class__.__name__}: {exc})") from exc


def fit_reference(model: Any, x_train: np.ndarray, *, model_sha256: str, quantile: float = 0.99,
                  max_points: int = 2000, seed: int = 0) -> Reference:
    """The reference of ``model`` on (a seeded sample of at most ``max_points``) training images."""
    quantile = check_number("quantile", quantile, min_value=0, max_value=1, min_inclusive=False)
    max_points = check_positive_int("max_points", max_points)
    if len(x_train) < 2:
        raise ModelFormatError("an embedding reference needs at least 2 training images")
    index = np.arange(len(x_train))
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, size=max_points, replace=False))
    emb = embed(model, np.asarray(x_train)[index])
    loo = nearest_distances(emb, emb, exclude_self=True)
    threshold = float(np.quantile(loo, quantile))
    log.info("embedding reference: %d training images, nearest-neighbour distance p%g = %.4f",
             len(emb), 100 * quantile, threshold)
    return Reference(emb, threshold, quantile, model_sha256)


__all__ = ["REFERENCE_FILE", "Reference", "embed", "fit_reference", "nearest_distances"]
