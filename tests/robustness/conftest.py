"""Tiny Keras models and data for the robustness tests (built here, nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """Two easily separable classes of 28x28 images: bright top half vs bright bottom half, plus noise."""
    rng = np.random.default_rng(0)
    n = 96
    y = np.arange(n) % 2
    x = rng.random((n, 28, 28, 1), dtype=np.float32) * 0.3
    x[y == 0, :14] += 0.6
    x[y == 1, 14:] += 0.6
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_model(tiny_data):
    """A small softmax CNN trained for a few epochs on ``tiny_data`` (accuracy ~1)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = tiny_data
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model
