from __future__ import annotations

import numpy as np
import pytest

from pcapvision.errors import ParameterError
from pcapvision.robustness.attacks import (
    AttackSpec,
    BinaryTarget,
    art_classifier,
    attack_metrics,
    confusion_matrix,
    generate,
    logits_model,
    perturbation_norms,
    predict_proba,
    quantize_to_bytes,
    robust_accuracy_at_radii,
    run_attack,
    tail_mask,
)


def test_tiny_model_is_accurate(tiny_model, tiny_data):
    x, y = tiny_data
    assert (predict_proba(tiny_model, x).argmax(1) == y).mean() > 0.95


@pytest.mark.parametrize("name,eps", [("fgsm", 0.1), ("pgd_linf", 0.2)])
def test_linf_attacks_stay_within_budget_and_range(tiny_model, tiny_data, name, eps):
    x, y = tiny_data
    x_adv = generate(AttackSpec(name, eps=eps, steps=5, restarts=1), art_classifier(tiny_model), x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > eps / 2  # it did move


def test_pgd_l2_stays_within_l2_ball(tiny_model, tiny_data):
    x, y = tiny_data
    x_adv = generate(AttackSpec("pgd_l2", eps=1.5, steps=5), art_classifier(tiny_model), x, y)
    norms = perturbation_norms(x, x_adv)["l2"]
    assert norms.max() <= 1.5 + 1e-4
    assert norms.max() > 0.5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_strong_pgd_lowers_accuracy(tiny_model, tiny_data):
    x, y = tiny_data
    result = run_attack(AttackSpec("pgd_linf", eps=0.5, steps=10, restarts=1), tiny_model, x, y)
    assert result.metrics["robust_accuracy"] < result.metrics["clean_accuracy"]
    assert result.metrics["steps"] == 10 and result.metrics["random_restarts"] == 1
    assert result.metrics["step_size"] == pytest.approx(2.5 * 0.5 / 10)


def test_masked_attack_never_touches_unmasked_pixels(tiny_model, tiny_data):
    x, y = tiny_data
    mask = tail_mask(np.full(len(x), 500), (28, 28, 1))
    for spec in (AttackSpec("fgsm", eps=0.3), AttackSpec("pgd_linf", eps=0.5, steps=5, restarts=1)):
        x_adv = generate(spec, art_classifier(tiny_model), x, y, mask=mask)
        assert np.array_equal(x_adv[mask == 0], x[mask == 0])
        assert np.abs(x_adv - x)[mask == 1].max() > 0


def test_eps_zero_returns_the_input(tiny_model, tiny_data):
    x, y = tiny_data
    x_adv = generate(AttackSpec("fgsm", eps=0.0), art_classifier(tiny_model), x, y)
    assert np.array_equal(x_adv, x)


def test_deepfool_on_logits_flips_samples(tiny_model, tiny_data):
    x, y = tiny_data
    logits = logits_model(tiny_model)
    import keras

    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits(x[:8])))
    np.testing.assert_allclose(probs, predict_proba(tiny_model, x[:8]), atol=1e-5)
    result = run_attack(AttackSpec("deepfool", steps=20), tiny_model, x[:8], y[:8])
    assert result.metrics["attack_success_rate"] > 0.5
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_deepfool_refuses_a_mask(tiny_model, tiny_data):
    x, y = tiny_data
    with pytest.raises(ParameterError, match="mask"):
        generate(AttackSpec("deepfool"), art_classifier(tiny_model), x[:2], y[:2], mask=np.ones_like(x[:2]))


def test_tail_mask_marks_bytes_after_the_payload():
    mask = tail_mask([0, 3, 784], (28, 28, 1), reserved=2)
    flat = mask.reshape(3, -1)
    assert flat[0, :2].sum() == 0 and flat[0, 2:].all()
    assert flat[1, :5].sum() == 0 and flat[1, 5:].all()
    assert flat[2].sum() == 0


def test_perturbation_norms_of_a_known_delta():
    x = np.zeros((1, 2, 2, 1), np.float32)
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.3
    x_adv[0, 1, 1, 0] = 0.4
    x_adv[0, 0, 1, 0] = 0.001  # below half a grey level: not counted in L0
    norms = perturbation_norms(x, x_adv)
    assert norms["l0"][0] == 2
    assert norms["l2"][0] == pytest.approx(np.sqrt(0.09 + 0.16 + 1e-6), rel=1e-5)
    assert norms["linf"][0] == pytest.approx(0.4)


def test_quantize_to_bytes_lands_on_the_grid():
    q = quantize_to_bytes(np.array([0.0, 0.5, 1.2, -0.1, 0.33], np.float32))
    np.testing.assert_allclose(q * 255, np.round(q * 255), atol=1e-4)
    assert q.min() == 0 and q.max() == 1


def test_attack_metrics_separates_the_two_evasion_rates():
    y = np.array([0, 0, 1, 1])
    clean = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # the last one already wrong
    adv = np.array([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.7, 0.3]])
    norms = perturbation_norms(np.zeros((4, 1)), np.zeros((4, 1)))
    m = attack_metrics(y, clean, adv, norms, class_names=["normal", "malicious"],
                       binary=BinaryTarget(malicious_index=1, normal_index=0, threshold=0.5))
    assert m["clean_accuracy"] == 0.75
    assert m["robust_accuracy"] == 0.5
    assert m["error_rate_after_attack_unconditioned"] == 0.5  # samples 0 and 3 wrong after
    assert m["attack_success_rate"] == pytest.approx(1 / 3)  # of 0, 1, 2 only sample 0 flipped
    assert "evasion_rate_all" not in m and "evasion_rate_of_correct" not in m
    assert m["per_class"]["normal"]["most_common_adversarial_class"] == "malicious"
    # malicious detected before: only sample 2 (p=0.7); still detected after
    assert m["n_malicious_detected"] == 1 and m["malicious_to_normal_evasion_rate"] == 0.0


def test_attack_rates_are_decided_at_the_operating_threshold_not_argmax():
    # threshold 0.2 on p(malicious): sample 0 (p=0.3) is detected before, and its adversarial
    # version (p=0.25) is still detected, although the arg-max calls both 'normal'.
    y = np.array([1, 1, 0])
    clean = np.array([[0.7, 0.3], [0.9, 0.1], [0.95, 0.05]])
    adv = np.array([[0.75, 0.25], [0.95, 0.05], [0.7, 0.3]])
    norms = perturbation_norms(np.zeros((3, 1)), np.zeros((3, 1)))
    m = attack_metrics(y, clean, adv, norms, class_names=["normal", "malicious"],
                       binary=BinaryTarget(malicious_index=1, normal_index=0, threshold=0.2))
    assert m["clean_accuracy"] == pytest.approx(2 / 3)  # sample 1 missed (p=0.1 < 0.2)
    assert m["n_originally_correct"] == 2
    # sample 0 stays detected; sample 2 (normal) is pushed to p=0.3 >= 0.2: 1 of 2 flipped
    assert m["attack_success_rate"] == pytest.approx(0.5)
    # the clean miss (sample 1) is not an evasion: 0 of the 1 detected malicious samples evaded
    assert m["n_malicious_detected"] == 1 and m["malicious_to_normal_evasion_rate"] == 0.0
    assert m["error_rate_after_attack_unconditioned"] == pytest.approx(2 / 3)
    assert "0.2" in m["decision"]


def test_confusion_matrix_and_radius_accuracy():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]
    rows = robust_accuracy_at_radii(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([1, 0, 0]),
                                    np.array([0.5, 2.0, 0.1]), [0.0, 1.0, 3.0])
    assert [r["robust_accuracy_upper_bound"] for r in rows] == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_attack_spec_validates_parameters():
    with pytest.raises(ParameterError, match="The 'attack' parameter must be one of"):
        AttackSpec("cw")
    with pytest.raises(ParameterError, match="The 'eps' parameter"):
        AttackSpec("fgsm", eps=-1)
