"""The two networks: the CNN used for MNIST and traffic alike, and the classic MLP baseline."""

from __future__ import annotations

from typing import Any

from pcapvision.errors import ParameterError
from pcapvision.validation import check_choice, check_int, check_positive_number

ARCHITECTURES = ("cnn", "mlp")
DEFAULT_LEARNING_RATE = {"cnn": 1e-3, "mlp": 1e-2}


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ParameterError(
            f"The 'input_shape' parameter must be a (height, width, channels) tuple of positive ints. Got {input_shape!r} instead."
        )
    return shape


def build_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    n_classes: int = 10,
    *,
    learning_rate: float = DEFAULT_LEARNING_RATE["cnn"],
    compile: bool = True,
) -> Any:
    """A LeNet-style CNN: Conv32-Pool-Conv64-Pool-Dense128-softmax, compiled with Adam.

    Inputs are float32 images in [0, 1]; the output is a softmax over ``n_classes``. The model
    is compiled with sparse categorical cross-entropy (integer labels) and accuracy.
    """
    import keras
    from keras import layers

    shape = _check_shape(input_shape)
    n_classes = check_int("n_classes", n_classes, min_value=2)
    model = keras.Sequential(
        [
            keras.Input(shape=shape, name="image"),
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.25, name="dropout1"),
            layers.Dense(128, activation="relu", name="dense1"),
            layers.Dropout(0.5, name="dropout2"),
            layers.Dense(n_classes, activation="softmax", name="probabilities"),
        ],
        name="pcapvision_cnn",
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=check_positive_number("learning_rate", learning_rate)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def build_mlp(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    n_classes: int = 10,
    *,
    learning_rate: float = DEFAULT_LEARNING_RATE["mlp"],
    compile: bool = True,
) -> Any:
    """The classic 784-128-64-n ReLU multilayer perceptron, compiled with SGD (lr 0.01)."""
    import keras
    from keras import layers

    shape = _check_shape(input_shape)
    n_classes = check_int("n_classes", n_classes, min_value=2)
    model = keras.Sequential(
        [
            keras.Input(shape=shape, name="image"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense1"),
            layers.Dense(64, activation="relu", name="dense2"),
            layers.Dense(n_classes, activation="softmax", name="probabilities"),
        ],
        name="pcapvision_mlp",
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=check_positive_number("learning_rate", learning_rate)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def build_model(arch: str, input_shape: tuple[int, int, int], n_classes: int, *, learning_rate: float | None = None) -> Any:
    """``build_cnn`` or ``build_mlp`` by name, compiled, with the architecture's default learning rate."""
    arch = check_choice("arch", arch, ARCHITECTURES)
    lr = DEFAULT_LEARNING_RATE[arch] if learning_rate is None else learning_rate
    builder = build_cnn if arch == "cnn" else build_mlp
    return builder(input_shape, n_classes, learning_rate=lr)


__all__ = ["ARCHITECTURES", "DEFAULT_LEARNING_RATE", "build_cnn", "build_mlp", "build_model"]
