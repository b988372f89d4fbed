"""The model directory: ``model.keras`` + ``metadata.json``, written atomically, loaded in safe mode."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcapvision.classify.model import custom_objects
from pcapvision.errors import ModelFormatError
from pcapvision.io import atomic_path, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
STAGE = "classify"


def save_model(model: Any, model_dir: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Path:
    """Write ``model`` to ``model_dir/model.keras`` and ``metadata`` (plus the model's SHA-256) to
    ``model_dir/metadata.json``, each atomically; return the directory.

    ``metadata`` should come from :func:`pcapvision.io.make_metadata` ("stage": "classify").
    """
    directory = Path(model_dir)
    # Keras only saves to a name ending in .keras, hence keep_suffix.
    with atomic_path(directory / MODEL_FILE, keep_suffix=True) as tmp:
        model.save(tmp)
        digest = sha256_file(tmp)
    record = dict(metadata)
    record.setdefault("stage", STAGE)
    record["model_file"] = MODEL_FILE
    record["model_sha256"] = digest
    write_json_atomic(directory / METADATA_FILE, record)
    log.info("saved model to %s", directory)
    return directory


def read_metadata(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a model directory (checked to be a pcapvision classify model)."""
    directory = Path(model_dir)
    if directory.is_file() and directory.suffix == ".keras":
        directory = directory.parent
    if not directory.is_dir():
        raise ModelFormatError(f"{directory}: no such model directory")
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file():
        raise ModelFormatError(f"{directory}: not a pcapvision model directory (no {METADATA_FILE})")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{meta_path}: corrupt metadata ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("stage") != STAGE:
        raise ModelFormatError(f"{meta_path}: not the metadata of a pcapvision classify model")
    for key in ("class_names", "model_sha256"):
        if key not in metadata:
            raise ModelFormatError(f"{meta_path}: metadata lacks {key!r}")
    return metadata


def load_model(model_dir: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load ``(keras.Model, metadata)`` from a model directory, with Keras safe mode on.

    Raises :class:`ModelFormatError` (one line) when the directory, the metadata or the model
    file is missing, corrupt, foreign, or does not match the hash recorded at save time.
    """
    import keras

    metadata = read_metadata(model_dir)
    directory = Path(model_dir)
    if directory.is_file():
        directory = directory.parent
    model_path = directory / metadata.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise ModelFormatError(f"{model_path}: model file is missing")
    if not zipfile.is_zipfile(model_path):
        raise ModelFormatError(f"{model_path}: not a Keras model archive")
    if sha256_file(model_path) != metadata["model_sha256"]:
        raise ModelFormatError(f"{model_path}: file does not match the SHA-256 recorded in {METADATA_FILE}")
    try:
        model = keras.models.load_model(model_path, safe_mode=True, custom_objects=custom_objects())
    except Exception as exc:  # Keras raises ValueError, KeyError, OSError, TypeError... for bad archives
        first = " ".join(str(exc).split())[:200]
        raise ModelFormatError(f"{model_path}: cannot load the Keras model ({exc.__class__.__name__}: {first})") from exc
    n_out = model.output_shape[-1]
    if n_out != len(metadata["class_names"]):
        raise ModelFormatError(f"{model_path}: model has {n_out} outputs but metadata lists {len(metadata['class_names'])} classes")
    return model, metadata


__all__ = ["METADATA_FILE", "MODEL_FILE", "load_model", "read_metadata", "save_model"]
