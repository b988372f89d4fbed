from __future__ import annotations

import numpy as np
import pytest

from pcapvision.classify import build_cnn, build_mlp
from pcapvision.errors import ParameterError


def test_cnn_has_conv_pool_dense_softmax_and_adam():
    import keras

    model = build_cnn((28, 28, 1), n_classes=3)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("MaxPooling2D") == 2
    assert kinds[-1] == "Dense" and model.layers[-1].activation.__name__ == "softmax"
    assert model.output_shape == (None, 3)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    proba = model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_is_784_128_64_n_relu_with_sgd_lr_001():
    import keras

    model = build_mlp((28, 28, 1), n_classes=10)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [d.units for d in dense] == [128, 64, 10]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "softmax"]
    assert model.layers[0].output.shape[-1] == 784
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.01)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_classes": 1}, "The 'n_classes' parameter must be an int >= 2. Got 1 instead."),
    ({"input_shape": (28, 28)}, "The 'input_shape' parameter must be a (height, width, channels) tuple"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ParameterError) as info:
        build_cnn(**kwargs)
    assert str(info.value).startswith(message)


def test_byte_embedding_is_the_table_row_at_whole_bytes_and_interpolates_between():
    import tensorflow as tf

    from pcapvision.classify.model import ByteEmbedding

    layer = ByteEmbedding.create(4)
    whole = np.array([[0, 1, 200, 255]], np.float32) / 255.0
    out = layer(whole).numpy()
    table = layer.table.numpy()
    np.testing.assert_allclose(out[0], table[[0, 1, 200, 255]], rtol=1e-6)
    half = layer(np.array([[200.5 / 255.0]], np.float32)).numpy()[0, 0]
    np.testing.assert_allclose(half, (table[200] + table[201]) / 2, rtol=1e-5, atol=1e-6)
    x = tf.convert_to_tensor(np.array([[100.25 / 255.0]], np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x))
    expected = 255.0 * float((table[101] - table[100]).sum())  # slope of the interpolation
    assert float(tape.gradient(y, x)[0, 0]) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("arch", ["cnn-embed", "cnn1d"])
def test_traffic_architectures_build_predict_and_reload_in_safe_mode(arch, tmp_path):
    from pcapvision.classify import build_model, load_model, save_model

    model = build_model(arch, (28, 28, 1), 2)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert ("Conv1D" in kinds) == (arch == "cnn1d") and ("ByteEmbeddingLayer" in kinds) == (arch == "cnn-embed")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.float32) / 255.0
    proba = model.predict(x, verbose=0)
    save_model(model, tmp_path / "m", {"class_names": ["a", "b"], "params": {"arch": arch}})
    loaded, _ = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), proba, rtol=1e-5, atol=1e-6)
