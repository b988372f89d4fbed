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
