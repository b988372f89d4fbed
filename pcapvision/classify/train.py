"""The ONE training function, shared by MNIST and traffic: tf.data input, early stopping, seeds."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from pcapvision.classify.model import ARCHITECTURES, build_model
from pcapvision.console import import_tensorflow, progress
from pcapvision.errors import DataContractError, ParameterError
from pcapvision.validation import check_choice, check_int, check_number, check_positive_int

log = logging.getLogger(__name__)

# Class weights are applied when the largest class outnumbers the smallest by more than this.
IMBALANCE_RATIO = 1.5


def make_dataset(
    x: np.ndarray, y: np.ndarray | None, batch_size: int, *, shuffle: bool = False, seed: int = 0
) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` over in-memory arrays (shuffled with ``seed``).

    Batches are gathered from the arrays by shuffled index, as Keras does for NumPy input: shuffling
    whole images through a ``shuffle`` buffer copies every image each epoch and was ~25% slower.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(np.asarray(x, dtype=np.float32))
    labels = None if y is None else tf.convert_to_tensor(np.asarray(y))
    index = tf.data.Dataset.range(len(x))
    if shuffle:
        index = index.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    index = index.batch(batch_size)
    if labels is None:
        data = index.map(lambda i: tf.gather(images, i), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = index.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float] | None:
    """sklearn's 'balanced' weights when classes are imbalanced (ratio > IMBALANCE_RATIO), else None."""
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    if present.max() <= IMBALANCE_RATIO * present.min():
        return None
    # n_samples / (n_classes * count), as sklearn.utils.class_weight.compute_class_weight('balanced').
    return {int(c): float(len(y) / (len(present) * counts[c])) for c in range(n_classes) if counts[c] > 0}


def _by_name(values: dict[int, float], class_names: list[str] | None) -> dict[str, float]:
    """``{class index: value}`` keyed by class name (the index itself when no names are given)."""
    names = [str(c) for c in class_names] if class_names is not None else None
    return {(names[k] if names is not None and k < len(names) else str(k)): round(v, 3) for k, v in values.items()}


def _check_arrays(name: str, x: Any, y: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 4 or len(x) != len(y) or y.ndim != 1 or len(x) == 0:
        raise DataContractError(f"{name}: expected images (N, H, W, C) and labels (N,) with N > 0, got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ParameterError(f"The '{name}' labels must be integer class indices. Got dtype {y.dtype} instead.")
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        raise ParameterError(f"The '{name}' labels must lie in [0, {n_classes}). Got [{y.min()}, {y.max()}] instead.")
    return x, y.astype(np.int64)


class _EpochProgress:
    """Keras callback: a progress bar over epochs and one log line per epoch."""

    def __new__(cls, epochs: int):  # built lazily so importing this module does not import keras
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = progress(total=epochs, desc="training", unit="epoch")
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                shown = {k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
                log.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v}" for k, v in shown.items()))
                self.bar.set_postfix(shown, refresh=False)
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Callback()


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    arch: str = "cnn",
    epochs: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    learning_rate: float | None = None,
    patience: int = 3,
    class_weight: str | dict[int, float] | None = "auto",
    n_classes: int | None = None,
    callbacks: list[Any] | None = None,
    jit_compile: bool | str = "auto",
    class_names: list[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build and train ``arch`` (one of ``ARCHITECTURES``) on integer labels; return ``(model, history)``.

    Input goes through ``tf.data`` (shuffled each epoch with ``seed``); training stops early when
    the validation loss has not improved for ``patience`` epochs and the best weights are restored.
    ``class_weight='auto'`` applies balanced class weights when the classes are imbalanced; pass
    a dict to set them, or None for none. ``callbacks`` are extra Keras callbacks; ``jit_compile``
    is passed to ``Model.compile`` ('auto': XLA only on accelerators; it slows CPU training).
    ``class_names`` (index order) name the classes in log messages. ``history`` holds per-epoch ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy`` lists plus ``best_epoch``, ``epochs_run``, ``class_weight``,
    ``train_seconds`` and ``train_images_per_s``.
    """
    import_tensorflow()
    import keras

    arch = check_choice("arch", arch, ARCHITECTURES)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_int("seed", seed, min_value=0)
    patience = check_int("patience", patience, min_value=0)
    if learning_rate is not None:
        check_number("learning_rate", learning_rate, min_value=0, min_inclusive=False)
    x_train, y_train = _check_arrays("y_train", x_train, y_train, n_classes)
    x_val, y_val = _check_arrays("y_val", x_val, y_val, n_classes)
    if x_train.shape[1:] != x_val.shape[1:]:
        raise DataContractError(f"train images are {x_train.shape[1:]}, validation images {x_val.shape[1:]}")
    if n_classes is None:
        n_classes = int(max(y_train.max(), y_val.max())) + 1
    n_classes = check_int("n_classes", n_classes, min_value=2)

    if class_weight == "auto":
        weights = balanced_class_weight(y_train, n_classes)
    elif class_weight is None or isinstance(class_weight, dict):
        weights = class_weight
    else:
        raise ParameterError(f"The 'class_weight' parameter must be 'auto', a dict or None. Got {class_weight!r} instead.")
    if weights:
        log.info("classes are imbalanced: class weights %s", _by_name(weights, class_names))

    keras.utils.set_random_seed(seed)
    model = build_model(arch, x_train.shape[1:], n_classes, learning_rate=learning_rate)
    if jit_compile != "auto":
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=jit_compile)
    train_data = make_dataset(x_train, y_train, batch_size, shuffle=True, seed=seed)
    val_data = make_dataset(x_val, y_val, batch_size)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
    )
    started = time.perf_counter()
    fit = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles, with the seed
        class_weight=weights,
        callbacks=[stopper, _EpochProgress(epochs), *(callbacks or [])],
        verbose=0,
    )
    seconds = time.perf_counter() - started
    hist = {k: [float(v) for v in values] for k, values in fit.history.items()}
    epochs_run = len(hist.get("loss", []))
    val_loss = hist.get("val_loss", [])
    history: dict[str, Any] = {
        **hist,
        "epochs_run": epochs_run,
        "best_epoch": int(np.argmin(val_loss)) + 1 if val_loss else epochs_run,
        "stopped_early": epochs_run < epochs,
        "class_weight": weights,
        "train_seconds": seconds,
        # includes validation passes; bench/train.py measures pure training throughput
        "train_images_per_s": len(x_train) * epochs_run / seconds if seconds > 0 else None,
    }
    log.info(
        "trained %s for %d epochs (best %d) in %.1f s", arch, epochs_run, history["best_epoch"], seconds
    )
    return model, history


__all__ = ["IMBALANCE_RATIO", "balanced_class_weight", "make_dataset", "train_model"]
