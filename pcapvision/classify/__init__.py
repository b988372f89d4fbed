"""Classify stage: the CNN (and MLP baseline), its training, evaluation, baselines and predictions.

Public API::

    build_cnn(input_shape=(28, 28, 1), n_classes=10) -> keras.Model        # compiled, Adam
    build_mlp(input_shape=(28, 28, 1), n_classes=10) -> keras.Model        # compiled, SGD lr 0.01
    build_cnn_embed(...), build_cnn1d(...)   # byte-embedding CNN, 1-D CNN over the 784 bytes
    ARCHITECTURES                            # "cnn", "mlp", "cnn-embed", "cnn1d": train_model(arch=...)
    train_model(x_train, y_train, x_val, y_val, *, arch="cnn", epochs, batch_size, seed, ...)
        -> (model, history)                                                # the ONE training function
    load_mnist(mnist_file=None, seed=0) -> (x_train, y_train, x_test, y_test, info)
    mnist_test_split(metadata) -> (x_test, y_test)
    save_model(model, model_dir, metadata) / load_model(model_dir) -> (model, metadata)   # the ONE loader
    read_split_manifest(model_dir, metadata) -> DataFrame                  # hash-verified split
    staged_model_directory(model_dir)                                       # write a model dir as a unit
    train_mnist(...), train_images(...), evaluate(...), predict_pcaps(..., reference=None)   # the CLI's calls
    resolve_test_rows(model_dir, metadata, images) -> TestRows              # the ONE test-row rule
    find_training_table(model_dir, metadata, candidates) -> (dataset | None, why)
    resolve_positive_class(class_names, positive_class=None) / model_positive_class(metadata, override)
    reload_mnist(info); check_representation(metadata, images_schema, source)
    classification_metrics(y, proba, class_names, threshold=, positive_class=); predict_labels(...)
    run_baselines(...), predict_proba(model, x)
    plot_training_curves(history), plot_confusion_matrix(cm, names), plot_samples_per_class(x, y, names)
    embed(model, x); fit_reference(model, x_train, model_sha256=...) -> Reference   # in-distribution check
    Reference.load(path).score(model, x) -> (nn_distance, in_distribution)
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
    reload_mnist,
    split_indices,
)
from pcapvision.classify.evaluate import (
    classification_metrics,
    model_positive_class,
    positive_class_index,
    predict_labels,
    resolve_positive_class,
    run_baselines,
)
from pcapvision.classify.model import ARCHITECTURES, build_cnn, build_cnn1d, build_cnn_embed, build_mlp, build_model
from pcapvision.classify.novelty import REFERENCE_FILE, Reference, embed, fit_reference
from pcapvision.classify.pipeline import evaluate, train_images, train_mnist
from pcapvision.classify.plots import confusion_matrix as plot_confusion_matrix
from pcapvision.classify.plots import samples_per_class as plot_samples_per_class
from pcapvision.classify.plots import training_curves as plot_training_curves
from pcapvision.classify.predict import check_representation, predict_pcaps, predict_proba
from pcapvision.classify.rows import TestRows, find_training_table, resolve_test_rows
from pcapvision.classify.train import make_dataset, train_model

__all__ = [
    "ARCHITECTURES", "REFERENCE_FILE", "SPLIT_MANIFEST_FILE", "ImagesDataset", "Reference", "TestRows", "build_cnn",
    "build_cnn1d", "build_cnn_embed", "build_mlp", "build_model", "check_representation", "classification_metrics",
    "embed", "evaluate", "find_training_table", "fit_reference", "load_images_dataset", "load_mnist", "load_model",
    "make_dataset", "mnist_test_split", "model_positive_class", "plot_confusion_matrix", "plot_samples_per_class",
    "plot_training_curves", "positive_class_index", "predict_labels", "predict_pcaps", "predict_proba",
    "read_metadata", "read_split_manifest", "reload_mnist", "resolve_positive_class", "resolve_test_rows", "run_baselines", "save_model",
    "split_indices", "staged_model_directory", "train_images", "train_mnist", "train_model",
]
