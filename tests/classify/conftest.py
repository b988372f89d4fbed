"""Small data and one tiny trained model shared by the classify tests (CPU-only, seconds)."""

from __future__ import annotations

import numpy as np
import pytest


def toy_images(n: int = 240, seed: int = 0, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28x28 images whose class is a bright 8x8 square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.uniform(0, 0.3, size=(n, 28, 28, 1)).astype(np.float32)
    corners = [(2, 2), (18, 18), (2, 18), (18, 2)]
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, r:r + 8, c:c + 8, 0] = rng.uniform(0.7, 1.0)
    rng.shuffle(idx := np.arange(n))
    return x[idx], y[idx].astype(np.int64)


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory) -> "Path":  # noqa: F821
    """An x/y .npz of 1,000 random digits from the bundled real-MNIST sample."""
    from pcapvision.classify.datasets import bundled_mnist_path

    with np.load(bundled_mnist_path()) as npz:
        x, y = npz["x"], npz["y"]
    pick = np.random.default_rng(0).choice(len(y), size=1000, replace=False)
    path = tmp_path_factory.mktemp("mnist") / "mnist-1k.npz"
    np.savez(path, x=x[pick], y=y[pick])
    return path


@pytest.fixture(scope="session")
def mnist_model_dir(tmp_path_factory, mnist_small):
    """A model directory trained for 2 epochs on mnist_small (shared: training is the slow part)."""
    from pcapvision.classify.pipeline import train_mnist

    out = tmp_path_factory.mktemp("models") / "mnist-cnn"
    record = train_mnist(out, mnist_file=mnist_small, epochs=2, batch_size=64, seed=0)
    return out, record
