"""Adversarial attacks through ART, the metrics we report on them, and attack masks.

All attacks run on a Keras model that outputs softmax probabilities on float32 images in
[0, 1] (N, H, W, C). ART is told so through the loss (``from_logits=False``) and
``clip_values=(0, 1)``; every adversarial image therefore stays in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcapvision.errors import ParameterError
from pcapvision.validation import check_choice, check_int, check_number, check_positive_int

log = logging.getLogger(__name__)

ATTACKS = ("fgsm", "pgd_linf", "pgd_l2", "deepfool")
# A pixel counts as changed (L0) when it moved by at least half a grey level: anything smaller
# is float noise that vanishes when the image is stored as uint8.
L0_TOLERANCE = 0.5 / 255.0
# DeepFool stops on the decision boundary; overshoot by 2% to cross it (the paper's value).
DEEPFOOL_OVERSHOOT = 0.02


def art_classifier(model: Any, *, clip_values: tuple[float, float] = (0.0, 1.0), from_logits: bool = False) -> Any:
    """Wrap a Keras model as an ART ``TensorFlowV2Classifier``.

    The loss is sparse categorical cross-entropy on probabilities (``from_logits=False``, our
    models end in softmax), so ART's loss gradients are those of the loss the model was trained
    with; pass ``from_logits=True`` for a :func:`logits_model`.
    """
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    input_shape = tuple(int(d) for d in model.input_shape[1:])
    nb_classes = int(model.output_shape[-1])
    return TensorFlowV2Classifier(
        model=model,
        nb_classes=nb_classes,
        input_shape=input_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        clip_values=clip_values,
    )


def logits_model(model: Any) -> Any:
    """A model sharing ``model``'s layers that outputs the pre-softmax scores (logits).

    DeepFool linearises the class scores; on saturated softmax probabilities the gradients vanish
    and its steps explode, so it is run on the logits (same arg-max, same decisions). Returns
    ``model`` itself when its last layer has no softmax activation.
    """
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is None or getattr(activation, "__name__", "") != "softmax":
        return model
    config = last.get_config()
    config["activation"] = "linear"
    config["name"] = f"{last.name}_logits"
    linear = type(last).from_config(config)
    features = model.layers[-2].output if len(model.layers) > 1 else model.inputs[0]
    outputs = linear(features)
    linear.set_weights(last.get_weights())
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # same structure as the calls
    return keras.Model(inputs, outputs, name=f"{model.name}_logits")


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of ``model`` on ``x``, batched, without Keras' progress output."""
    out = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration; ``eps`` is the budget in [0, 1] pixel units (L2 for ``pgd_l2``)."""

    name: str
    eps: float = 0.0
    steps: int = 10
    step_size: float | None = None  # default: 2.5 * eps / steps (Madry et al.)
    restarts: int = 0  # random starts; 0 = start at the clean image
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_choice("attack", self.name, ATTACKS)
        check_number("eps", self.eps, min_value=0.0)
        check_positive_int("steps", self.steps)
        check_int("restarts", self.restarts, min_value=0)
        check_positive_int("batch_size", self.batch_size)
        if self.step_size is not None:
            check_number("step_size", self.step_size, min_value=0.0, min_inclusive=False)

    @property
    def norm(self) -> str:
        return {"fgsm": "inf", "pgd_linf": "inf", "pgd_l2": "2", "deepfool": "2"}[self.name]

    @property
    def effective_step_size(self) -> float:
        if self.name == "fgsm":
            return self.eps
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def describe(self) -> dict[str, Any]:
        """The parameters recorded in the report."""
        out: dict[str, Any] = {"attack": self.name, "norm": self.norm, "eps": self.eps}
        if self.name in ("pgd_linf", "pgd_l2"):
            out.update(steps=self.steps, step_size=self.effective_step_size, random_restarts=self.restarts)
        elif self.name == "deepfool":
            out.update(max_iter=self.steps, overshoot=DEEPFOOL_OVERSHOOT)
        return out


def make_attack(spec: AttackSpec, classifier: Any) -> Any:
    """The ART evasion attack for ``spec``."""
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

    if spec.name == "fgsm":
        return FastGradientMethod(classifier, norm=np.inf, eps=spec.eps, eps_step=max(spec.eps, 1e-12),
                                  batch_size=spec.batch_size)
    if spec.name in ("pgd_linf", "pgd_l2"):
        return ProjectedGradientDescent(
            classifier,
            norm=np.inf if spec.name == "pgd_linf" else 2,
            eps=spec.eps,
            eps_step=spec.effective_step_size,
            max_iter=spec.steps,
            num_random_init=spec.restarts,
            batch_size=spec.batch_size,
            verbose=False,
        )
    return DeepFool(classifier, max_iter=spec.steps, epsilon=DEEPFOOL_OVERSHOOT, nb_grads=int(classifier.nb_classes),
                    batch_size=spec.batch_size, verbose=False)


def generate(
    spec: AttackSpec,
    classifier: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Adversarial versions of ``x`` (untargeted, against the true labels ``y``).

    ``mask`` (same shape as ``x``, or broadcastable) is 1 where the attacker may change a pixel
    and 0 elsewhere; pixels outside it are returned unchanged. ``eps == 0`` returns ``x``.
    """
    x = np.asarray(x, np.float32)
    if spec.eps == 0 and spec.name != "deepfool":
        return x.copy()
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, np.float32), x.shape)
        if spec.name == "deepfool":
            raise ParameterError("The 'mask' parameter is not supported by the 'deepfool' attack. Got a mask instead.")
    # ART draws random starts from numpy's global generator.
    np.random.seed(seed)
    attack = make_attack(spec, classifier)
    kwargs: dict[str, Any] = {}
    if mask is not None:
        kwargs["mask"] = mask
    if spec.name == "deepfool":
        x_adv = attack.generate(x)
    else:
        x_adv = attack.generate(x, y=np.asarray(y, np.int64), **kwargs)
    x_adv = np.clip(np.asarray(x_adv, np.float32), 0.0, 1.0)
    if mask is not None:
        # ART applies the mask to the gradient step; enforce it exactly on the result too.
        x_adv = np.where(mask > 0, x_adv, x)
    return x_adv


def quantize_to_bytes(x: np.ndarray) -> np.ndarray:
    """Round pixel values onto the k/255 grid (what a uint8 image or a byte can hold)."""
    return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def perturbation_norms(x: np.ndarray, x_adv: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example L0 (pixels changed by >= half a grey level), L2 and Linf of ``x_adv - x``."""
    delta = (np.asarray(x_adv, np.float32) - np.asarray(x, np.float32)).reshape(len(x), -1)
    return {
        "l0": (np.abs(delta) >= L0_TOLERANCE).sum(axis=1).astype(np.int64),
        "l2": np.linalg.norm(delta, axis=1).astype(np.float64),
        "linf": np.abs(delta).max(axis=1, initial=0.0).astype(np.float64),
    }


@dataclass
class BinaryTarget:
    """How to read a two-class traffic model: which class is malicious, and its decision threshold."""

    malicious_index: int
    normal_index: int
    threshold: float = 0.5


def decide(proba: np.ndarray, binary: BinaryTarget | None = None) -> np.ndarray:
    """Predicted class indices at the model's operating point.

    Two-class models (``binary``): malicious when p(malicious) >= the threshold, else normal.
    Otherwise the arg-max. Every rate the suite reports decides this way.
    """
    proba = np.asarray(proba)
    if binary is None:
        return proba.argmax(axis=1)
    return np.where(proba[:, binary.malicious_index] >= binary.threshold, binary.malicious_index, binary.normal_index)


def decision_rule(binary: BinaryTarget | None) -> str:
    """The decision rule of :func:`decide`, in words, for reports."""
    if binary is None:
        return "arg-max"
    return f"class {binary.malicious_index} (malicious) when its probability >= {binary.threshold:g}"


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def attack_metrics(
    y: np.ndarray,
    proba_clean: np.ndarray,
    proba_adv: np.ndarray,
    norms: Mapping[str, np.ndarray],
    *,
    class_names: Sequence[str] | None = None,
    binary: BinaryTarget | None = None,
) -> dict[str, Any]:
    """The numbers we report for one attack at one budget, all decided at the model's operating
    point (:func:`decide`: the threshold of a two-class model, else arg-max).

    * ``clean_accuracy`` / ``robust_accuracy``: accuracy before / after the attack.
    * ``attack_success_rate``: among samples classified correctly before the attack, the fraction
      classified wrongly after (``n_originally_correct`` of them). Samples the model already got
      wrong are not counted as the attack's success.
    * ``error_rate_after_attack_unconditioned``: fraction of all attacked samples classified
      wrongly after the attack, clean misses included (= 1 - robust_accuracy).
    * ``most_common_adversarial_class``: per true class, the wrong class its flipped samples are
      most often turned into.
    * with ``binary``: ``malicious_to_normal_evasion_rate``: among malicious samples detected at
      the threshold before the attack (``n_malicious_detected``), the fraction scored below it after.
    """
    y = np.asarray(y, np.int64)
    pred_clean = decide(proba_clean, binary)
    pred_adv = decide(proba_adv, binary)
    correct = pred_clean == y
    wrong_after = pred_adv != y
    n_classes = proba_clean.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    per_class: dict[str, Any] = {}
    for k in range(n_classes):
        flipped = (y == k) & correct & wrong_after
        entry: dict[str, Any] = {"n": int((y == k).sum()), "n_flipped": int(flipped.sum())}
        if flipped.any():
            counts = np.bincount(pred_adv[flipped], minlength=n_classes)
            entry["most_common_adversarial_class"] = names[int(counts.argmax())]
            entry["most_common_count"] = int(counts.max())
        per_class[names[k]] = entry
    out: dict[str, Any] = {
        "n_attacked": int(len(y)),
        "decision": decision_rule(binary),
        "clean_accuracy": float(correct.mean()) if len(y) else float("nan"),
        "robust_accuracy": float((~wrong_after).mean()) if len(y) else float("nan"),
        "attack_success_rate": float(wrong_after[correct].mean()) if correct.any() else float("nan"),
        "n_originally_correct": int(correct.sum()),
        "error_rate_after_attack_unconditioned": float(wrong_after.mean()) if len(y) else float("nan"),
        "norm_l0": _summary(norms["l0"]),
        "norm_l2": _summary(norms["l2"]),
        "norm_linf": _summary(norms["linf"]),
        "per_class": per_class,
    }
    if binary is not None:
        mal = y == binary.malicious_index
        detected = mal & (pred_clean == binary.malicious_index)
        evaded = detected & (pred_adv != binary.malicious_index)
        out["malicious_to_normal_evasion_rate"] = float(evaded.sum() / detected.sum()) if detected.any() else float("nan")
        out["n_malicious_detected"] = int(detected.sum())
        out["threshold"] = binary.threshold
    return out


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    return np.bincount(np.asarray(y, np.int64) * n_classes + np.asarray(pred, np.int64),
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass
class AttackResult:
    """One attack at one budget: metrics plus the arrays behind them."""

    spec: AttackSpec
    metrics: dict[str, Any]
    x_adv: np.ndarray
    proba_adv: np.ndarray
    norms: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def run_attack(
    spec: AttackSpec,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    proba_clean: np.ndarray | None = None,
    classifier: Any = None,
    mask: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    binary: BinaryTarget | None = None,
    seed: int = 0,
) -> AttackResult:
    """Generate adversarial examples for ``spec`` and measure them."""
    import time

    if spec.name == "deepfool":
        classifier = art_classifier(logits_model(model), from_logits=True)
    elif classifier is None:
        classifier = art_classifier(model)
    proba_clean = proba_clean if proba_clean is not None else predict_proba(model, x)
    start = time.perf_counter()
    x_adv = generate(spec, classifier, x, y, mask=mask, seed=seed)
    seconds = time.perf_counter() - start
    proba_adv = predict_proba(model, x_adv)
    norms = perturbation_norms(x, x_adv)
    metrics = attack_metrics(y, proba_clean, proba_adv, norms, class_names=class_names, binary=binary)
    metrics.update(spec.describe())
    metrics["seconds"] = round(seconds, 3)
    log.info("%s eps=%g: robust accuracy %.3f (%.1fs)", spec.name, spec.eps, metrics["robust_accuracy"], seconds)
    return AttackResult(spec, metrics, x_adv, proba_adv, norms, seconds)


def robust_accuracy_at_radii(
    y: np.ndarray, pred_clean: np.ndarray, pred_adv: np.ndarray, l2_norms: np.ndarray, radii: Sequence[float]
) -> list[dict[str, float]]:
    """Accuracy within an L2 ball of each radius, from a minimal-norm attack (e.g. DeepFool).

    A sample counts as robust at radius r when it is classified correctly and the smallest
    adversarial perturbation found is larger than r (or none was found). This is an upper bound
    on the true robust accuracy: a stronger attack may find smaller perturbations.
    """
    correct = pred_clean == y
    found = pred_adv != y
    rows = []
    for r in radii:
        robust = correct & (~found | (l2_norms > r))
        rows.append({"radius_l2": float(r), "robust_accuracy_upper_bound": float(robust.mean()) if len(y) else float("nan")})
    return rows


def tail_mask(payload_lengths: Sequence[int], image_shape: tuple[int, ...], *, reserved: int = 0) -> np.ndarray:
    """A mask over row-major byte images that is 1 on the zero-padded tail after each payload.

    Byte ``i`` of a payload image sits at pixel ``i`` in row-major order; a flow with ``n`` real
    payload bytes can be extended by its sender, so pixels ``n + reserved ..`` are attacker
    controlled. ``reserved`` bytes right after the payload are left out (e.g. the 5-byte header of
    an appended TLS record, which the attacker must write but cannot choose freely).
    """
    n_pixels = int(np.prod(image_shape))
    lengths = np.asarray(payload_lengths, np.int64)
    positions = np.arange(n_pixels)[None, :]
    flat = (positions >= (lengths[:, None] + reserved)).astype(np.float32)
    return flat.reshape((len(lengths), *image_shape))


__all__ = [
    "ATTACKS",
    "AttackResult",
    "AttackSpec",
    "BinaryTarget",
    "art_classifier",
    "attack_metrics",
    "confusion_matrix",
    "decide",
    "decision_rule",
    "generate",
    "logits_model",
    "make_attack",
    "perturbation_norms",
    "predict_proba",
    "quantize_to_bytes",
    "robust_accuracy_at_radii",
    "run_attack",
    "tail_mask",
]
