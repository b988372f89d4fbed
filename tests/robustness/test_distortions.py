from __future__ import annotations

import numpy as np
import pytest

from pcapvision.errors import ParameterError
from pcapvision.robustness.distortions import DISTORTIONS, distort, severity_sweep


@pytest.fixture()
def images() -> np.ndarray:
    rng = np.random.default_rng(1)
    x = np.zeros((6, 28, 28, 1), np.float32)
    x[:, 8:20, 12:16] = rng.random((6, 12, 4, 1), dtype=np.float32) * 0.5 + 0.5
    return x


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_every_distortion_keeps_shape_range_and_is_seeded(images, name):
    assert np.array_equal(distort(images, name, 0), images)
    for severity in range(1, 6):
        out = distort(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not np.array_equal(out, images), f"{name} severity {severity} changed nothing"
        assert np.array_equal(out, distort(images, name, severity, seed=3))


def test_severity_grows_the_change(images):
    for name in ("gaussian_noise", "gaussian_blur", "rotation", "brightness", "contrast"):
        changes = [np.abs(distort(images, name, s) - images).mean() for s in range(1, 6)]
        assert changes == sorted(changes), name


def test_occlusion_zeroes_a_square():
    x = np.ones((3, 28, 28, 1), np.float32)
    out = distort(x, "occlusion", 1)  # side 4
    assert ((out == 0).reshape(3, -1).sum(axis=1) == 16).all()


def test_translation_moves_the_mass_by_whole_pixels(images):
    out = distort(images, "translation", 2)  # 2 pixels
    for a, b in zip(images, out):
        # some 2-pixel shift of the original reproduces the output exactly (zero fill).
        shifts = [np.roll(a, s, axis=ax) for ax, s in ((0, 2), (0, -2), (1, 2), (1, -2))]
        assert any(np.array_equal(s, b) for s in shifts)


def test_contrast_keeps_each_image_mean():
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32) * 0.5 + 0.25
    out = distort(x, "contrast", 3)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-5)


def test_severity_is_validated(images):
    with pytest.raises(ParameterError, match=r"The 'severity' parameter must be an int in \[0, 5\]. Got 6 instead."):
        distort(images, "rotation", 6)
    with pytest.raises(ParameterError, match="'distortion'"):
        distort(images, "fog", 1)


def test_severity_sweep_reports_clean_accuracy_at_severity_zero(images):
    y = np.zeros(len(images), np.int64)
    # A "model" that says 0 when the image's centre column is bright: breaks under occlusion/translation.
    rows = severity_sweep(lambda a: (a[:, 8:20, 12:16].mean(axis=(1, 2, 3)) < 0.3).astype(np.int64), images, y,
                          names=["translation"])
    assert rows[0]["severity"] == 0 and rows[0]["accuracy"] == 1.0
    assert len(rows) == 6
    assert rows[-1]["accuracy"] < 1.0
