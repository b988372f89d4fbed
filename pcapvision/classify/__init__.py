"""Classify stage: the CNN (and MLP baseline), its training, evaluation, baselines and predictions.

Public API::

    build_cnn(input_shape=(28, 28, 1), n_classes=10) -> keras.Model        # compiled, Adam
    build_mlp(input_shape=(28, 28, 1), n_classes=10) -> keras.Model        # compiled, SGD lr 0.01
    train_model(x_train, y_train, x_val, y_val, *, arch="cnn", epochs, batch_size, seed, ...)
        -> (model, history)                                                # the ONE training function
    load_mnist(mnist_file=None, seed=0) -> (x_train, y_train, x_test, y_test, info)
    mnist_test_split(metadata) -> (x_test, y_test)
    save_model(model, model_dir, metadata) / load_model(model_dir) -> (model, metadata)   # the ONE loader
    read_split_manifest(model_dir, metadata) -> DataFrame                  # hash-verified split
    staged_model_directory(model_dir)                                       # write a model dir as a unit
    train_mnist(...), train_images(...), evaluate(...), predict_pcaps(...)
"""

from __future__ import annotations

import os

# oneDNN kernels roughly double CPU training and inference throughput here but are off by default
# in this TensorFlow build (see BENCHMARKS.md); the switch only works before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from pcapvision.classify.artifact import (
    SPLIT_MANIFEST_FILE,
    load_model,
    read_metadata,
    read_split_manifest,
    save_model,
    staged_model_directory,
)
from pcapvision.classify.datasets import (
    ImagesDataset,
    load_images_dataset,
    load_mnist,
    mnist_test_split,
    split_indices,
)
from pcapvision.classify.model import build_cnn, build_mlp, build_model
from pcapvision.classify.train import make_dataset, train_model

__all__ = [
    "SPLIT_MANIFEST_FILE", "ImagesDataset", "build_cnn", "build_mlp", "build_model", "load_images_dataset", "load_mnist",
    "load_model", "make_dataset", "mnist_test_split", "read_metadata", "read_split_manifest", "save_model",
    "split_indices", "staged_model_directory",
    "train_model",
]
