"""The networks: the CNN used for MNIST and traffic alike, the classic MLP baseline, and two
traffic variants: the CNN after a learned byte embedding (``cnn-embed``) and a 1-D CNN over the
784 bytes in order (``cnn1d``). All take float32 ``(N, 28, 28, 1)`` in [0, 1] and end in a softmax."""

from __future__ import annotations

from typing import Any

from pcapvision.errors import ParameterError
from pcapvision.validation import check_choice, check_int, check_positive_number

ARCHITECTURES = ("cnn", "mlp", "cnn-embed", "cnn1d")
DEFAULT_LEARNING_RATE = {"cnn": 1e-3, "mlp": 1e-2, "cnn-embed": 1e-3, "cnn1d": 1e-3}
OPTIMIZERS = {"cnn": "adam", "mlp": "sgd", "cnn-embed": "adam", "cnn1d": "adam"}
EMBEDDING_DIM = 8


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
    return _convolutional("pcapvision_cnn", input_shape, n_classes, [], learning_rate, compile)


def build_cnn_embed(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    n_classes: int = 10,
    *,
    learning_rate: float = DEFAULT_LEARNING_RATE["cnn-embed"],
    compile: bool = True,
    embedding_dim: int = EMBEDDING_DIM,
) -> Any:
    """The CNN's body after a learned byte embedding: each pixel's byte value is a category.

    :class:`ByteEmbedding` maps byte ``b`` to a learned vector ``E[b]`` (``embedding_dim``
    values), so the ``(28, 28, 1)`` image becomes ``(28, 28, embedding_dim)`` and a filter can
    respond to one exact byte value (a record type, a length byte) rather than to intensity.
    """
    from keras import layers

    shape = _check_shape(input_shape)
    if shape[-1] != 1:
        raise ParameterError(f"The 'input_shape' parameter must have 1 channel for cnn-embed. Got {input_shape!r} instead.")
    dim = check_int("embedding_dim", embedding_dim, min_value=1)
    front = [ByteEmbedding.create(dim), layers.Reshape((*shape[:-1], dim), name="embedded")]
    return _convolutional("pcapvision_cnn_embed", shape, n_classes, front, learning_rate, compile)


def build_cnn1d(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    n_classes: int = 10,
    *,
    learning_rate: float = DEFAULT_LEARNING_RATE["cnn1d"],
    compile: bool = True,
) -> Any:
    """A 1-D CNN over the image's bytes in row-major order (Wang et al. 2017's 1D-CNN, smaller).

    Conv1D(32, 25)-Pool(3)-Conv1D(64, 25)-Pool(3)-Dense128-softmax, ``same`` padding, Adam: for
    the payload representation a filter spans 25 consecutive payload bytes across image rows.
    """
    import keras
    from keras import layers

    shape = _check_shape(input_shape)
    n_classes = check_int("n_classes", n_classes, min_value=2)
    length = shape[0] * shape[1] * shape[2]
    model = keras.Sequential(
        [
            keras.Input(shape=shape, name="image"),
            layers.Reshape((length, 1), name="sequence"),
            layers.Conv1D(32, 25, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling1D(3, name="pool1"),
            layers.Conv1D(64, 25, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling1D(3, name="pool2"),
            *_head(n_classes),
        ],
        name="pcapvision_cnn1d",
    )
    return _compiled(model, keras.optimizers.Adam, learning_rate, compile)


def _head(n_classes: int) -> list[Any]:
    from keras import layers

    return [
        layers.Flatten(name="flatten"),
        layers.Dropout(0.25, name="dropout1"),
        layers.Dense(128, activation="relu", name="dense1"),
        layers.Dropout(0.5, name="dropout2"),
        layers.Dense(n_classes, activation="softmax", name="probabilities"),
    ]


def _compiled(model: Any, optimizer: Any, learning_rate: float, compile: bool) -> Any:
    if compile:
        model.compile(
            optimizer=optimizer(learning_rate=check_positive_number("learning_rate", learning_rate)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def _convolutional(name: str, input_shape: Any, n_classes: int, front: list[Any], learning_rate: float, compile: bool) -> Any:
    """Input, ``front`` layers, then Conv32-Pool-Conv64-Pool and the dense head."""
    import keras
    from keras import layers

    shape = _check_shape(input_shape)
    n_classes = check_int("n_classes", n_classes, min_value=2)
    model = keras.Sequential(
        [
            keras.Input(shape=shape, name="image"),
            *front,
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            *_head(n_classes),
        ],
        name=name,
    )
    return _compiled(model, keras.optimizers.Adam, learning_rate, compile)


def custom_objects() -> dict[str, Any]:
    """The project's own Keras layers, for loading saved models in safe mode."""
    return {"pcapvision>ByteEmbeddingLayer": ByteEmbedding.layer_class()}


class ByteEmbedding:
    """Keras layer (built on first use): float pixels in [0, 1] -> a learned vector per byte value.

    Pixel ``x`` is byte value ``v = 255 x``. For a whole byte (every real image) the output is
    exactly the table row ``E[v]``. Between two bytes it interpolates linearly,
    ``(1 - f) E[floor v] + f E[floor v + 1]`` with ``f = v - floor v``, so the output is a
    continuous, piecewise-linear function of the pixel and gradient attacks (FGSM, PGD, ART)
    work unchanged; their results are projected back to whole bytes where the attack must be
    realizable (see docs/robustness.md).
    """

    _cls: Any = None

    @classmethod
    def layer_class(cls) -> Any:
        if cls._cls is None:
            cls._cls = _define_byte_embedding()
        return cls._cls

    @classmethod
    def create(cls, dim: int) -> Any:
        return cls.layer_class()(dim, name="byte_embedding")


def _define_byte_embedding() -> Any:
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="pcapvision")
    class ByteEmbeddingLayer(keras.layers.Layer):
        def __init__(self, dim: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.dim = int(dim)

        def build(self, input_shape: Any) -> None:
            self.table = self.add_weight(shape=(256, self.dim), initializer="uniform", name="table")

        def call(self, x: Any) -> Any:
            v = ops.clip(ops.cast(x, "float32") * 255.0, 0.0, 255.0)
            low = ops.stop_gradient(ops.floor(v))
            frac = ops.expand_dims(v - low, -1)
            i = ops.cast(low, "int32")
            j = ops.minimum(i + 1, 255)
            return (1.0 - frac) * ops.take(self.table, i, axis=0) + frac * ops.take(self.table, j, axis=0)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (*input_shape, self.dim)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "dim": self.dim}

    return ByteEmbeddingLayer


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
    return _compiled(model, keras.optimizers.SGD, learning_rate, compile)


def build_model(arch: str, input_shape: tuple[int, int, int], n_classes: int, *, learning_rate: float | None = None) -> Any:
    """One of :data:`ARCHITECTURES` by name, compiled, with the architecture's default learning rate."""
    arch = check_choice("arch", arch, ARCHITECTURES)
    lr = DEFAULT_LEARNING_RATE[arch] if learning_rate is None else learning_rate
    builders = {"cnn": build_cnn, "mlp": build_mlp, "cnn-embed": build_cnn_embed, "cnn1d": build_cnn1d}
    return builders[arch](input_shape, n_classes, learning_rate=lr)


__all__ = ["ARCHITECTURES", "DEFAULT_LEARNING_RATE", "OPTIMIZERS", "ByteEmbedding", "custom_objects", "build_cnn", "build_cnn1d",
           "build_cnn_embed", "build_mlp", "build_model"]
