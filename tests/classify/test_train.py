from __future__ import annotations

import numpy as np
import pytest

from pcapvision.classify import pipeline, train
from pcapvision.classify.train import balanced_class_weight, train_model
from pcapvision.errors import ParameterError
from tests.classify.conftest import toy_images


def test_small_cnn_learns_a_separable_toy_set_well_above_chance():
    x, y = toy_images(240, n_classes=4)
    model, history = train_model(x[:160], y[:160], x[160:200], y[160:200], epochs=6, batch_size=32, seed=0)
    accuracy = (model.predict(x[200:], verbose=0).argmax(1) == y[200:]).mean()
    assert accuracy >= 0.9  # chance is 0.25
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "best_epoch", "epochs_run"}
    assert len(history["loss"]) == history["epochs_run"] and history["loss"][-1] < history["loss"][0]


def test_mlp_arch_trains_through_the_same_function():
    x, y = toy_images(160)
    model, _ = train_model(x[:120], y[:120], x[120:], y[120:], arch="mlp", epochs=2, batch_size=32, seed=0)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [128, 64, 2]


def test_training_is_reproducible_with_a_seed():
    x, y = toy_images(96)
    a, _ = train_model(x[:64], y[:64], x[64:], y[64:], epochs=1, batch_size=16, seed=7)
    b, _ = train_model(x[:64], y[:64], x[64:], y[64:], epochs=1, batch_size=16, seed=7)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_class_weights_only_when_imbalanced():
    assert balanced_class_weight(np.array([0, 1] * 50), 2) is None
    weights = balanced_class_weight(np.array([0] * 90 + [1] * 10), 2)
    assert weights == pytest.approx({0: 100 / (2 * 90), 1: 100 / (2 * 10)})


def test_early_stopping_restores_the_best_epoch():
    x, y = toy_images(120)
    rng = np.random.default_rng(0)
    y_noise = rng.integers(0, 2, len(y))  # labels carry no signal: validation loss soon stops improving
    _, history = train_model(x[:80], y_noise[:80], x[80:], y_noise[80:], epochs=25, batch_size=16, seed=0, patience=1)
    assert history["stopped_early"] and history["epochs_run"] < 25
    assert history["best_epoch"] == int(np.argmin(history["val_loss"])) + 1


def test_bad_arguments_are_named():
    x, y = toy_images(20)
    with pytest.raises(ParameterError, match="'arch' parameter"):
        train_model(x, y, x, y, arch="resnet")
    with pytest.raises(ParameterError, match="'epochs' parameter must be a positive int"):
        train_model(x, y, x, y, epochs=0)
    with pytest.raises(ParameterError, match="integer class indices"):
        train_model(x, y.astype(float), x, y)


def test_mnist_and_traffic_share_the_builder_and_the_training_function(monkeypatch, tmp_path, mnist_small, images_table):
    """Both entry points go through train.train_model -> model.build_model -> build_cnn."""
    from pcapvision.classify import model as model_module

    calls = {"train_model": [], "build_cnn": 0}
    real_train, real_build = train.train_model, model_module.build_cnn

    def spy_train(*args, **kwargs):
        calls["train_model"].append(kwargs.get("arch"))
        return real_train(*args, **kwargs)

    def spy_build(*args, **kwargs):
        calls["build_cnn"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_model", spy_train)
    monkeypatch.setattr(model_module, "build_cnn", spy_build)
    pipeline.train_mnist(tmp_path / "m", mnist_file=mnist_small, epochs=1, batch_size=128)
    pipeline.train_images(images_table, tmp_path / "t", epochs=1, batch_size=32)
    assert calls == {"train_model": ["cnn", "cnn"], "build_cnn": 2}
    assert pipeline.train_model is spy_train and train.train_model is real_train
