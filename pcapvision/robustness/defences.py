"""Defences: adversarial training (PGD-AT, fast FGSM with random start) and Gaussian augmentation.

The training loop is ours: ART's TensorFlow v2 trainers have no per-epoch robustness check, and
ART's PGD runs eagerly with numpy projections, measured 3-4x slower than a compiled
``tf.GradientTape`` loop at training batch sizes (bench/robustness.py). So training examples come
from :func:`pgd_linf_tf` by default (``engine="tf"``) or from ART's ``ProjectedGradientDescent``
(``engine="art"``); the per-epoch check and every reported number use ART. Each defence fine-tunes a copy of the given model (weights
copied, a fresh Adam optimiser) and never touches the original.

Fast adversarial training (Wong et al. 2020) is PGD with one step of size ``1.25 * eps`` from a
uniform random start. It can collapse ("catastrophic overfitting": FGSM accuracy high, PGD
accuracy near zero within an epoch), so every epoch ends with a PGD check on a validation slice
carved from the training data (never the images the defended model is reported on) and training
stops, restoring the best weights, when PGD accuracy falls by more than ``collapse_drop`` from
its best.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcapvision.console import progress
from pcapvision.robustness.attacks import AttackSpec, art_classifier, generate, predict_proba
from pcapvision.validation import check_choice, check_number, check_positive_int

log = logging.getLogger(__name__)

METHODS = ("pgd", "fgsm_rs", "gaussian")


def pgd_linf_tf(model: Any, eps: float, steps: int, step_size: float) -> Any:
    """A compiled Linf PGD with a uniform random start: ``attack(x, y) -> x_adv`` (tensors).

    The same algorithm as ART's ``ProjectedGradientDescent(norm=inf, num_random_init=1)``:
    signed-gradient steps on the cross-entropy of the softmax output, projected onto the eps ball
    and [0, 1] after each step.
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=False)

    @tf.function(reduce_retracing=True)
    def attack(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -eps, eps), 0.0, 1.0)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = loss_fn(y, model(x_adv, training=False))
            x_adv = x_adv + step_size * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)
        return x_adv

    return attack


def copy_model(model: Any, learning_rate: float = 1e-3) -> Any:
    """A compiled copy of ``model`` with the same weights and a fresh Adam optimiser."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return clone


@dataclass
class DefenceResult:
    """A defended model and its training log."""

    model: Any
    method: str
    params: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "history": self.history,
                "stopped_early_catastrophic_overfitting": self.stopped_early, "seconds": round(self.seconds, 1)}


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict_proba(model, x).argmax(axis=1) == y).mean())


def adversarial_training(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "pgd",
    eps: float = 0.3,
    epochs: int = 2,
    batch_size: int = 128,
    steps: int = 10,
    step_size: float | None = None,
    x_check: np.ndarray | None = None,
    y_check: np.ndarray | None = None,
    check_steps: int = 10,
    collapse_drop: float = 0.2,
    learning_rate: float = 1e-3,
    sigma: float = 0.3,
    engine: str = "tf",
    seed: int = 0,
) -> DefenceResult:
    """Fine-tune a copy of ``model`` with one defence and return it with a per-epoch log.

    ``method``: ``"pgd"`` (Madry PGD-AT: ``steps`` steps of ``step_size``, default 2.5*eps/steps,
    random start), ``"fgsm_rs"`` (one step of 1.25*eps from a random start) or ``"gaussian"``
    (each batch plus an N(0, sigma^2) noisy copy of it, clipped to [0, 1]). Each
    epoch ends with PGD-``check_steps`` accuracy (ART) on (``x_check``, ``y_check``) when given;
    PGD-AT and FGSM-RS keep the epoch that scores best there, so the check images must be a
    validation slice of the training data, never the images the defence is then reported on.
    ``engine`` makes the training examples with the compiled loop (``"tf"``) or ART (``"art"``).
    """
    import time

    import keras

    method = check_choice("method", method, METHODS)
    eps = check_number("eps", eps, min_value=0.0, min_inclusive=False)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    steps = check_positive_int("steps", steps)
    engine = check_choice("engine", engine, ("tf", "art"))
    keras.utils.set_random_seed(seed)
    start_time = time.perf_counter()
    defended = copy_model(model, learning_rate)
    classifier = art_classifier(defended)
    if method == "pgd":
        spec = AttackSpec("pgd_linf", eps=eps, steps=steps, step_size=step_size, restarts=1, batch_size=batch_size)
    elif method == "fgsm_rs":
        spec = AttackSpec("pgd_linf", eps=eps, steps=1, step_size=1.25 * eps, restarts=1, batch_size=batch_size)
    else:
        spec = None
    fast_attack = None
    if spec is not None and engine == "tf":
        import tensorflow as tf

        fast_attack = pgd_linf_tf(defended, eps, spec.steps, spec.effective_step_size)
    params: dict[str, Any] = {"eps": eps, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                              "seed": seed, "n_train": int(len(y)), "init": "fine-tuned from the given model"}
    if spec is not None:
        params["attack"] = spec.describe()
        params["engine"] = engine
    else:
        params["sigma"] = sigma
    check = AttackSpec("pgd_linf", eps=eps, steps=check_steps, restarts=1, batch_size=512)
    rng = np.random.default_rng(seed)
    history: list[dict[str, Any]] = []
    best_weights, best_robust, stopped = None, -1.0, False
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y))
        losses = []
        with progress(total=len(order), desc=f"{method} epoch {epoch}", unit="img") as bar:
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                xb, yb = x[idx], y[idx]
                if fast_attack is not None:
                    xb = fast_attack(tf.constant(xb), tf.constant(yb)).numpy()
                elif spec is not None:
                    xb = generate(spec, classifier, xb, yb, seed=seed * 100003 + epoch * 1009 + b)
                else:
                    noisy = np.clip(xb + rng.normal(0.0, sigma, xb.shape).astype(np.float32), 0.0, 1.0)
                    xb, yb = np.concatenate([xb, noisy]), np.concatenate([yb, yb])
                out = defended.train_on_batch(xb, yb, return_dict=True)
                losses.append(float(out["loss"]))
                bar.update(len(idx))
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if x_check is not None and y_check is not None:
            row["check_clean_accuracy"] = _accuracy(defended, x_check, y_check)
            x_adv = generate(check, classifier, x_check, y_check, seed=seed + epoch)
            row["check_pgd_accuracy"] = _accuracy(defended, x_adv, y_check)
            log.info("%s epoch %d: loss %.3f, clean %.3f, PGD-%d %.3f", method, epoch, row["train_loss"],
                     row["check_clean_accuracy"], check_steps, row["check_pgd_accuracy"])
            if method != "gaussian":
                if row["check_pgd_accuracy"] > best_robust:
                    best_robust, best_weights = row["check_pgd_accuracy"], defended.get_weights()
                elif row["check_pgd_accuracy"] < best_robust - collapse_drop:
                    log.warning("%s: PGD accuracy fell from %.3f to %.3f in epoch %d (catastrophic overfitting); "
                                "restoring the best epoch", method, best_robust, row["check_pgd_accuracy"], epoch)
                    history.append(row)
                    stopped = True
                    break
        history.append(row)
    if best_weights is not None:
        defended.set_weights(best_weights)
    return DefenceResult(defended, method, params, history, stopped, time.perf_counter() - start_time)


__all__ = ["METHODS", "DefenceResult", "adversarial_training", "copy_model", "pgd_linf_tf"]
