from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from pcapvision.classify.evaluate import (
    byte_histograms,
    classification_metrics,
    compare_with_baselines,
    run_baselines,
)
from tests.classify.conftest import toy_images


def _fixed_predictions(k: int, n: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_multiclass_metrics_agree_with_sklearn():
    names = ["a", "b", "c", "d"]
    y, proba = _fixed_predictions(4)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba, names)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    for i, name in enumerate(names):
        assert m["per_class"][name]["precision"] == pytest.approx(p[i])
        assert m["per_class"][name]["recall"] == pytest.approx(r[i])
        assert m["per_class"][name]["f1"] == pytest.approx(f[i])
        assert m["per_class"][name]["support"] == s[i]
    assert m["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["macro"]["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["macro"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    cm = skm.confusion_matrix(y, pred)
    assert m["confusion_matrix"] == cm.tolist()
    off = cm - np.diag(np.diag(cm))
    for i, name in enumerate(names):
        assert m["per_class"][name]["most_confused_with"] == names[int(off[i].argmax())]
        fp = cm[:, i].sum() - cm[i, i]
        assert m["per_class"][name]["false_positive_rate"] == pytest.approx(fp / (cm.sum() - cm[i].sum()))


def test_binary_metrics_use_malicious_as_positive_and_the_threshold():
    names = ["malicious", "normal"]
    y, proba = _fixed_predictions(2, seed=3)
    m = classification_metrics(y, proba, names, threshold=0.7)
    pred = np.where(proba[:, 0] >= 0.7, 0, 1)
    positive = m["positive"]
    assert positive["class"] == "malicious" and positive["threshold"] == 0.7
    assert positive["precision"] == pytest.approx(skm.precision_score(y == 0, pred == 0))
    assert positive["recall"] == pytest.approx(skm.recall_score(y == 0, pred == 0))
    tn, fp, fn, tp = skm.confusion_matrix(y == 0, pred == 0).ravel()
    assert positive["false_positive_rate"] == pytest.approx(fp / (fp + tn))
    assert positive["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, proba[:, 0]))
    assert positive["pr_auc"] == pytest.approx(skm.average_precision_score(y == 0, proba[:, 0]))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


def test_byte_histograms_count_every_byte():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    hist = byte_histograms(imgs)
    for i in range(5):
        np.testing.assert_allclose(hist[i], np.bincount(imgs[i].ravel(), minlength=256) / 784)


def test_single_pixel_stump_baseline_finds_a_pixel_that_decides_the_class():
    x, y = toy_images(200)
    x[:, 27, 27, 0] = np.where(y == 1, 1.0, 0.0)  # one pixel gives the class away
    rows = run_baselines(x[:150], y[:150], x[150:], y[150:], ["normal", "malicious"],
                         payload_length_train=np.where(y[:150] == 1, 100, 900),
                         payload_length_test=np.where(y[150:] == 1, 100, 900))
    by_name = {r["baseline"]: r for r in rows}
    assert set(by_name) == {"majority class", "byte histogram + logistic regression", "single-pixel stump",
                            "payload length only"}
    assert by_name["single-pixel stump"]["accuracy"] == 1.0
    assert by_name["payload length only"]["accuracy"] == 1.0
    assert 0.3 < by_name["majority class"]["accuracy"] < 0.7
    model = classification_metrics(y[150:], np.eye(2)[y[150:]] * 0.98 + 0.01, ["normal", "malicious"])
    warnings = compare_with_baselines(model, rows)
    assert any("single-pixel stump" in w and "matches the model on macro-F1" in w for w in warnings)
    assert not any("majority class" in w for w in warnings)


def _metrics(accuracy: float, macro_f1: float) -> dict:
    return {"accuracy": accuracy, "macro": {"f1": macro_f1}}


def test_baseline_warning_names_the_metric_and_the_gap_and_leads_with_macro_f1():
    baseline = {"baseline": "majority class", "what": "always 'normal'", "accuracy": 0.93, "macro_f1": 0.48}
    # accuracy beats the model by 3 points, macro-F1 is 40 points below: no claim that it "matches or beats"
    assert compare_with_baselines(_metrics(0.90, 0.88), [baseline]) == []
    close = {**baseline, "macro_f1": 0.87}
    (warning,) = compare_with_baselines(_metrics(0.90, 0.88), [close])
    assert "comes within a few points of the model on macro-F1" in warning
    assert "the model is only 1.0 points ahead" in warning and "the baseline is 3.0 points ahead" in warning
    ahead = {**baseline, "macro_f1": 0.95}
    (warning,) = compare_with_baselines(_metrics(0.90, 0.88), [ahead])
    assert "beats the model on macro-F1" in warning and "the baseline is 7.0 points ahead" in warning


def test_positive_class_is_never_guessed():
    from pcapvision.classify import resolve_positive_class
    from pcapvision.errors import ParameterError

    assert resolve_positive_class(["Malicious", "normal"]) == "Malicious"
    assert resolve_positive_class(["attack", "benign"], "attack") == "attack"
    assert resolve_positive_class([str(d) for d in range(10)]) is None
    with pytest.raises(ParameterError, match="--positive-class"):
        resolve_positive_class(["attack", "benign"])  # the old rule took index 1: 'benign'
    with pytest.raises(ParameterError, match="must be one of"):
        resolve_positive_class(["attack", "benign"], "evil")
    with pytest.raises(ParameterError, match="two-class models only"):
        resolve_positive_class(["a", "b", "c"], "a")
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, proba, ["attack", "benign"], positive_class="attack")
    assert m["positive"]["class"] == "attack" and m["positive"]["recall"] == 0.5
