"""Fooling images (Nguyen et al. 2015) and the extra "noise" class that is meant to absorb them.

A fooling image is an input the model assigns to a class with near certainty although it looks
like nothing of the kind. Starting from uniform noise, we ascend the log-probability of a target
class with the weights frozen (signed gradient steps, kept in [0, 1]) until the model gives it
``threshold`` (0.99) or the step budget runs out. ART has no such attack (its targeted attacks
stop at the first misclassification and do not report the steps), so the loop is written here
with a bare ``tf.GradientTape``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pcapvision.robustness.attacks import predict_proba
from pcapvision.validation import check_number, check_positive_int

log = logging.getLogger(__name__)


@dataclass
class FoolingResult:
    """Fooling images, one row per attempt."""

    images: np.ndarray  # float32 (N, H, W, C)
    target: np.ndarray  # int64 (N,)
    confidence: np.ndarray  # float32 (N,), probability of the target class at the end
    steps: np.ndarray  # int64 (N,), steps taken (max_steps when it never reached the threshold)
    success: np.ndarray  # bool (N,), confidence >= threshold and target is the arg-max
    threshold: float
    max_steps: int
    step_size: float

    def per_class(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        rows = []
        for k, name in enumerate(class_names):
            sel = self.target == k
            if not sel.any():
                continue
            ok = self.success[sel]
            rows.append({
                "class": name,
                "n": int(sel.sum()),
                "success_rate": float(ok.mean()),
                "median_steps_when_successful": float(np.median(self.steps[sel][ok])) if ok.any() else None,
                "mean_confidence": float(self.confidence[sel].mean()),
            })
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            "n": int(len(self.target)),
            "success_rate": float(self.success.mean()) if len(self.target) else float("nan"),
            "mean_confidence": float(self.confidence.mean()) if len(self.target) else float("nan"),
            "median_steps_when_successful": float(np.median(self.steps[self.success])) if self.success.any() else None,
            "threshold": self.threshold,
            "max_steps": self.max_steps,
            "step_size": self.step_size,
        }


def fooling_images(
    model: Any,
    targets: Sequence[int] | np.ndarray,
    *,
    threshold: float = 0.99,
    max_steps: int = 200,
    step_size: float = 0.01,
    seed: int = 0,
    batch_size: int = 512,
) -> FoolingResult:
    """One fooling image per entry of ``targets``, each grown from uniform noise.

    Images that reach ``threshold`` stop moving (their steps are recorded); the others take all
    ``max_steps``.
    """
    import tensorflow as tf

    threshold = check_number("threshold", threshold, min_value=0.0, max_value=1.0, min_inclusive=False)
    max_steps = check_positive_int("max_steps", max_steps)
    step_size = check_number("step_size", step_size, min_value=0.0, min_inclusive=False)
    targets = np.asarray(targets, np.int64)
    shape = tuple(int(d) for d in model.input_shape[1:])
    rng = np.random.default_rng(seed)
    x0 = rng.random((len(targets), *shape), dtype=np.float32)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, target: tf.Tensor, active: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            proba = model(x, training=False)
            log_p = tf.math.log(tf.gather(proba, target, batch_dims=1) + 1e-12)
        grad = tape.gradient(log_p, x)
        moved = tf.clip_by_value(x + step_size * tf.sign(grad), 0.0, 1.0)
        x_new = tf.where(active[:, None, None, None], moved, x)
        return x_new, tf.gather(proba, target, batch_dims=1)

    images = np.empty_like(x0)
    confidence = np.zeros(len(targets), np.float32)
    steps = np.full(len(targets), max_steps, np.int64)
    for start in range(0, len(targets), batch_size):
        sl = slice(start, start + batch_size)
        x = tf.constant(x0[sl])
        t = tf.constant(targets[sl])
        active = np.ones(len(targets[sl]), bool)
        batch_steps = np.full(len(targets[sl]), max_steps, np.int64)
        for i in range(max_steps + 1):
            # The probability returned is that of the input *before* this step's move.
            x_next, p = step(x, t, tf.constant(active))
            reached = active & (p.numpy() >= threshold)
            batch_steps[reached] = i
            active &= ~reached
            if not active.any() or i == max_steps:
                break
            # Images that just reached the threshold keep their pre-step value.
            x = tf.where(tf.constant(reached)[:, None, None, None], x, x_next)
        images[sl] = x.numpy()
        steps[sl] = batch_steps
    proba = predict_proba(model, images)
    confidence = proba[np.arange(len(targets)), targets]
    success = (confidence >= threshold) & (proba.argmax(axis=1) == targets)
    return FoolingResult(images, targets, confidence.astype(np.float32), steps, success, threshold, max_steps, step_size)


def noise_confidence(model: Any, n: int = 1000, *, seed: int = 0) -> dict[str, Any]:
    """The model's mean maximum probability on pure uniform noise, and the classes it picks."""
    n = check_positive_int("n", n)
    shape = tuple(int(d) for d in model.input_shape[1:])
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
    proba = predict_proba(model, x)
    counts = np.bincount(proba.argmax(axis=1), minlength=proba.shape[1])
    return {
        "n": n,
        "mean_max_confidence": float(proba.max(axis=1).mean()),
        "fraction_above_0.9": float((proba.max(axis=1) >= 0.9).mean()),
        "predicted_class_counts": counts.tolist(),
    }


def noise_class_training_set(
    model: Any,
    n_classes: int,
    n_per_class: int,
    *,
    max_steps: int = 200,
    step_size: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """Images for an extra "noise" class: fooling images of every class plus pure uniform noise."""
    targets = np.repeat(np.arange(n_classes), n_per_class)
    fooled = fooling_images(model, targets, max_steps=max_steps, step_size=step_size, seed=seed).images
    shape = fooled.shape[1:]
    pure = np.random.default_rng(seed + 1).random((n_classes * n_per_class, *shape), dtype=np.float32)
    return np.concatenate([fooled, pure]).astype(np.float32)


def retrain_with_noise_class(
    train: Callable[..., tuple[Any, Any]],
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_per_class: int = 50,
    epochs: int = 2,
    batch_size: int = 128,
    max_steps: int = 200,
    step_size: float = 0.01,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train a new model (with ``train``, classify's ``train_model``) on the data plus a noise class.

    The noise class (index ``n_classes``) holds fooling images of the current model and pure
    noise; a tenth of them go to validation. Returns the new model and what was done.
    """
    n_classes = int(model.output_shape[-1])
    noise = noise_class_training_set(model, n_classes, n_per_class, max_steps=max_steps, step_size=step_size, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(noise))
    n_val = max(1, len(noise) // 10)
    noise_val, noise_train = noise[perm[:n_val]], noise[perm[n_val:]]
    x_tr = np.concatenate([x_train, noise_train])
    y_tr = np.concatenate([y_train, np.full(len(noise_train), n_classes, np.int64)])
    x_va = np.concatenate([x_val, noise_val])
    y_va = np.concatenate([y_val, np.full(len(noise_val), n_classes, np.int64)])
    new_model, _ = train(x_tr, y_tr, x_va, y_va, epochs=epochs, batch_size=batch_size, seed=seed, n_classes=n_classes + 1)
    info = {"noise_class_index": n_classes, "n_noise_train": int(len(noise_train)), "n_noise_validation": int(n_val),
            "epochs": epochs, "batch_size": batch_size, "n_train": int(len(y_tr))}
    return new_model, info


__all__ = ["FoolingResult", "fooling_images", "noise_class_training_set", "noise_confidence", "retrain_with_noise_class"]
