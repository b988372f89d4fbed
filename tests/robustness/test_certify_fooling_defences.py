from __future__ import annotations

import numpy as np
import pytest

from pcapvision.robustness.attacks import perturbation_norms, predict_proba
from pcapvision.robustness.certify import certify_smoothing, clopper_pearson_lower
from pcapvision.robustness.defences import adversarial_training, pgd_linf_tf
from pcapvision.robustness.fooling import fooling_images, noise_confidence


def test_clopper_pearson_lower_bound():
    # k = n: the bound solves p^n = alpha.
    assert clopper_pearson_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-6)
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    assert 0.4 < clopper_pearson_lower(60, 100, 0.05) < 0.6


def test_certification_radii_are_consistent(tiny_model, tiny_data):
    x, y = tiny_data
    result = certify_smoothing(tiny_model, x[:6], y[:6], sigma=0.25, n=50, sample_size=16, radii=(0.0, 0.1, 0.5, 5.0))
    acc = [r["certified_accuracy"] for r in result["certified_accuracy"]]
    assert acc == sorted(acc, reverse=True)
    assert acc[0] > 0.5  # an easy problem: most points are certified at radius 0
    assert acc[-1] == 0.0  # no radius can exceed 0.25 * Phi^-1(0.001 ** (1/50)) ~ 0.28
    assert all(r >= 0 for r in result["certified_radius"])


def test_fooling_images_reach_the_threshold(tiny_model):
    result = fooling_images(tiny_model, [0, 1, 0, 1], max_steps=100, step_size=0.02, threshold=0.99)
    proba = predict_proba(tiny_model, result.images)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.steps <= 100).all()
    for i, t in enumerate(result.target):
        assert result.confidence[i] == pytest.approx(proba[i, t], abs=1e-5)
        assert result.success[i] == (proba[i, t] >= 0.99)
    assert result.success.mean() >= 0.5
    rows = result.per_class(["top", "bottom"])
    assert [r["class"] for r in rows] == ["top", "bottom"]


def test_noise_confidence_counts_every_sample(tiny_model):
    info = noise_confidence(tiny_model, 50)
    assert sum(info["predicted_class_counts"]) == 50
    assert 0.5 <= info["mean_max_confidence"] <= 1.0


def test_compiled_pgd_stays_in_budget(tiny_model, tiny_data):
    import tensorflow as tf

    x, y = tiny_data
    x_adv = pgd_linf_tf(tiny_model, 0.1, 3, 0.05)(tf.constant(x), tf.constant(y)).numpy()
    assert perturbation_norms(x, x_adv)["linf"].max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("method,engine", [("fgsm_rs", "tf"), ("pgd", "art"), ("gaussian", "tf")])
def test_adversarial_training_returns_a_new_model(tiny_model, tiny_data, method, engine):
    x, y = tiny_data
    before = [w.copy() for w in tiny_model.get_weights()]
    result = adversarial_training(tiny_model, x, y, method=method, eps=0.1, epochs=2, batch_size=32, steps=2,
                                  x_check=x[:16], y_check=y[:16], check_steps=2, engine=engine)
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_model.get_weights()))
    assert result.model is not tiny_model
    assert any(not np.array_equal(a, b) for a, b in zip(before, result.model.get_weights()))
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert {"check_clean_accuracy", "check_pgd_accuracy", "train_loss"} <= set(result.history[0])
