"""Metrics of a classifier on a fixed split, and the trivial baselines it must clearly beat."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pcapvision.errors import DataContractError, ParameterError
from pcapvision.validation import check_choice, check_number

log = logging.getLogger(__name__)

POSITIVE_CLASS = "malicious"
# A baseline whose macro-F1 or accuracy comes within this many points of the CNN's is flagged.
BASELINE_MARGIN_POINTS = 3.0


def resolve_positive_class(class_names: Sequence[str], positive_class: str | None = None) -> str | None:
    """The class treated as positive by a two-class model; None for other models. Never guessed.

    ``positive_class`` when given (it must be one of the two classes); otherwise the class named
    ``malicious`` (any case). Raises :class:`ParameterError` asking for ``--positive-class`` when
    neither class has that name.
    """
    names = [str(c) for c in class_names]
    if len(names) != 2:
        if positive_class is not None:
            raise ParameterError(f"The 'positive_class' parameter applies to two-class models only. Got "
                                 f"{positive_class!r} for the {len(names)} classes {names} instead.")
        return None
    if positive_class is not None:
        return check_choice("positive_class", str(positive_class), names)
    named = [n for n in names if n.lower() == POSITIVE_CLASS]
    if len(named) == 1:
        return named[0]
    raise ParameterError(f"Neither class of {names} is named {POSITIVE_CLASS!r}: say which one is positive with "
                         f"--positive-class (positive_class={names[0]!r} or {names[1]!r}).")


def positive_class_index(class_names: Sequence[str], positive_class: str | None = None) -> int | None:
    """Index of the positive class of a two-class model (see :func:`resolve_positive_class`), else None."""
    name = resolve_positive_class(class_names, positive_class)
    return None if name is None else [str(c) for c in class_names].index(name)


def model_positive_class(metadata: Mapping[str, Any], positive_class: str | None = None) -> str | None:
    """The positive class of a saved model: ``positive_class`` when given, else the one in its metadata."""
    return resolve_positive_class(metadata["class_names"], positive_class if positive_class is not None
                                  else metadata.get("positive_class"))


def predict_labels(proba: np.ndarray, class_names: Sequence[str], threshold: float = 0.5,
                   positive_class: str | None = None) -> np.ndarray:
    """Class indices at the operating point: p(positive) >= threshold in binary mode, else argmax."""
    proba = np.asarray(proba)
    pos = positive_class_index(class_names, positive_class)
    if pos is None:
        return proba.argmax(axis=1)
    return np.where(proba[:, pos] >= threshold, pos, 1 - pos)


def _ovr_auc(y_true: np.ndarray, scores: np.ndarray, k: int) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    target = y_true == k
    if target.all() or not target.any():
        return None, None  # undefined with a single class present
    return float(roc_auc_score(target, scores)), float(average_precision_score(target, scores))


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str], *, threshold: float = 0.5,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class/macro precision, recall, F1, FPR, confusion matrix, ROC-AUC, PR-AUC.

    ``y_true`` holds class indices into ``class_names``; ``proba`` is (N, n_classes). In binary
    mode the positive class (:func:`resolve_positive_class`) is predicted when its probability is at
    least ``threshold`` and gets its own ``positive`` block. ROC-AUC and PR-AUC (average precision)
    are one-vs-rest per class and macro-averaged over classes present in ``y_true``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    threshold = check_number("threshold", threshold, min_value=0, max_value=1)
    names = [str(c) for c in class_names]
    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(names)):
        raise DataContractError(f"probabilities have shape {proba.shape}, expected ({len(y_true)}, {len(names)})")
    k = len(names)
    labels = np.arange(k)
    pos = positive_class_index(names, positive_class)
    y_pred = predict_labels(proba, names, threshold, positive_class)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class: dict[str, dict[str, Any]] = {}
    rocs, prs = [], []
    for i, name in enumerate(names):
        negatives = cm.sum() - cm[i].sum()
        false_pos = cm[:, i].sum() - cm[i, i]
        off = cm[i].copy()
        off[i] = 0
        roc, pr = _ovr_auc(y_true, proba[:, i], i)
        if roc is not None:
            rocs.append(roc)
            prs.append(pr)
        per_class[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "false_positive_rate": float(false_pos / negatives) if negatives else None,
            "roc_auc": roc,
            "pr_auc": pr,
            "most_confused_with": names[int(off.argmax())] if off.sum() else None,
            "most_confused_count": int(off.max()) if off.sum() else 0,
        }
    present = support > 0
    result: dict[str, Any] = {
        "n_samples": int(len(y_true)),
        "class_names": names,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro": {
            "precision": float(precision[present].mean()) if present.any() else 0.0,
            "recall": float(recall[present].mean()) if present.any() else 0.0,
            "f1": float(f1[present].mean()) if present.any() else 0.0,
            "roc_auc": float(np.mean(rocs)) if rocs else None,
            "pr_auc": float(np.mean(prs)) if prs else None,
        },
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "operating_threshold": threshold if k == 2 else None,
    }
    if pos is not None:
        block = dict(per_class[names[pos]])
        block["class"] = names[pos]
        block["threshold"] = threshold
        result["positive"] = block
    return result


def curves(y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str],
           positive_class: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """ROC and precision-recall curve points per class (binary mode: the positive class only)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    names = list(class_names)
    pos = positive_class_index(names, positive_class)
    indices = [pos] if pos is not None else range(len(names))
    out: dict[str, dict[str, np.ndarray]] = {}
    for i in indices:
        target = np.asarray(y_true) == i
        if target.all() or not target.any():
            continue
        fpr, tpr, _ = roc_curve(target, proba[:, i])
        precision, recall, _ = precision_recall_curve(target, proba[:, i])
        out[names[i]] = {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}
    return out


# --- baselines ---------------------------------------------------------------------------------


def byte_histograms(images_u8: np.ndarray) -> np.ndarray:
    """(N, 256) normalised histograms of the byte values of each image (vectorised bincount)."""
    flat = np.asarray(images_u8, dtype=np.uint8).reshape(len(images_u8), -1).astype(np.int64)
    n, d = flat.shape
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=256 * n).reshape(n, 256)
    return counts.astype(np.float32) / np.float32(max(d, 1))


def as_uint8(x: np.ndarray) -> np.ndarray:
    """float images in [0, 1] back to their uint8 bytes."""
    return np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def _score(name: str, description: str, y_test: np.ndarray, proba: np.ndarray, class_names: Sequence[str],
           positive_class: str | None, **extra: Any) -> dict[str, Any]:
    m = classification_metrics(y_test, proba, class_names, positive_class=positive_class)
    row = {"baseline": name, "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "macro_roc_auc": m["macro"]["roc_auc"]}
    if "positive" in m:
        row[f"{m['positive']['class']}_f1"] = m["positive"]["f1"]
    row["what"] = description
    row.update(extra)
    return row


def _full_proba(clf: Any, features: np.ndarray, n_classes: int) -> np.ndarray:
    # A baseline fitted on a split missing some class predicts fewer columns: put them back.
    proba = np.zeros((len(features), n_classes))
    proba[:, clf.classes_.astype(int)] = clf.predict_proba(features)
    return proba


def run_baselines(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    *,
    payload_length_train: np.ndarray | None = None,
    payload_length_test: np.ndarray | None = None,
    seed: int = 0,
    positive_class: str | None = None,
) -> list[dict[str, Any]]:
    """Fit the trivial baselines on the training split and score them on the test split.

    Majority class; logistic regression on the 256-bin byte histogram of each image; the best
    single-pixel decision stump; and, when payload lengths are given, a shallow tree on the
    payload length alone. Images are float in [0, 1] (as the CNN sees them). Two-class figures
    use ``positive_class`` as the model's do.
    """
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    k = len(class_names)
    y_train = np.asarray(y_train).astype(np.int64)
    y_test = np.asarray(y_test).astype(np.int64)
    u8_train, u8_test = as_uint8(x_train), as_uint8(x_test)
    rows = []

    majority = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
    rows.append(_score(
        "majority class", f"always '{class_names[int(majority.classes_[np.argmax(majority.class_prior_)])]}'",
        y_test, _full_proba(majority, np.zeros((len(y_test), 1)), k), class_names, positive_class,
    ))

    # tol 1e-3: lbfgs then stops after ~40 iterations instead of ~80, at the same test accuracy (MNIST).
    hist_model = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-3, max_iter=300, random_state=seed))
    hist_model.fit(byte_histograms(u8_train), y_train)
    rows.append(_score(
        "byte histogram + logistic regression", "256-bin histogram of the image's byte values, no positions",
        y_test, _full_proba(hist_model[-1], hist_model[:-1].transform(byte_histograms(u8_test)), k), class_names,
        positive_class,
    ))

    flat_train = u8_train.reshape(len(u8_train), -1)
    stump = DecisionTreeClassifier(max_depth=1, random_state=seed).fit(flat_train, y_train)
    if stump.tree_.node_count > 1:
        pixel = int(stump.tree_.feature[0])
        width = x_train.shape[2]
        what = f"pixel (row {pixel // width}, col {pixel % width}) <= {stump.tree_.threshold[0]:.1f}"
    else:
        what = "no split improves on the majority class"
    rows.append(_score(
        "single-pixel stump", what, y_test, _full_proba(stump, u8_test.reshape(len(u8_test), -1), k), class_names,
        positive_class,
    ))

    if payload_length_train is not None and payload_length_test is not None:
        tree = DecisionTreeClassifier(max_depth=4, min_samples_leaf=5, random_state=seed)
        tree.fit(np.asarray(payload_length_train, dtype=np.float64)[:, None], y_train)
        rows.append(_score(
            "payload length only", "depth-4 decision tree on payload_length",
            y_test, _full_proba(tree, np.asarray(payload_length_test, dtype=np.float64)[:, None], k), class_names,
            positive_class,
        ))
    return rows


def _gap_words(gap_points: float) -> str:
    if gap_points < 0:
        return f"the baseline is {-gap_points:.1f} points ahead"
    if gap_points == 0:
        return "they are level"
    return f"the model is only {gap_points:.1f} points ahead"


def compare_with_baselines(model_metrics: dict[str, Any], baselines: list[dict[str, Any]], margin_points: float = BASELINE_MARGIN_POINTS) -> list[str]:
    """Plain-language warnings for baselines whose macro-F1 (the report's headline) comes within
    ``margin_points`` of the model's, saying by how much; accuracy is quoted beside it."""
    warnings = []
    f1 = model_metrics["macro"]["f1"]
    acc = model_metrics["accuracy"]
    for row in baselines:
        gap_f1 = 100 * (f1 - row["macro_f1"])
        if gap_f1 >= margin_points:
            continue
        verdict = "beats" if gap_f1 < 0 else ("matches" if gap_f1 == 0 else "comes within a few points of")
        gap_acc = 100 * (acc - row["accuracy"])
        warnings.append(
            f"The trivial baseline '{row['baseline']}' ({row['what']}) {verdict} the model on macro-F1: "
            f"{row['macro_f1']:.3f} vs {f1:.3f} ({_gap_words(gap_f1)}); accuracy {row['accuracy']:.3f} vs {acc:.3f} "
            f"({_gap_words(gap_acc)}). The model's score shows little beyond what that feature alone gives."
        )
    return warnings


__all__ = [
    "BASELINE_MARGIN_POINTS", "POSITIVE_CLASS", "as_uint8", "byte_histograms", "classification_metrics",
    "compare_with_baselines", "curves", "model_positive_class", "positive_class_index", "predict_labels",
    "resolve_positive_class", "run_baselines",
]
