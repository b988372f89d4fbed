"""The model directory: ``model.keras`` + ``metadata.json`` (+ ``split_manifest.parquet``), and the
ONE loader every caller uses (evaluate, predict, robustness, run): metadata checked against its
schema, the archive read once, hashed, passed through the gate (:mod:`.gate`) and only then
given to Keras in safe mode, and the loaded network checked against the metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcapvision.classify.gate import ALLOWED_LAYERS, MAX_ARCHIVE_BYTES, RECORD_ENTRY, check_archive
from pcapvision.classify.model import custom_objects
from pcapvision.console import import_tensorflow
from pcapvision.errors import ModelFormatError
from pcapvision.io import atomic_path, sha256_file, write_json_atomic
from pcapvision.outputs import staged_directory

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
SPLIT_MANIFEST_FILE = "split_manifest.parquet"
STAGE = "classify"
MAX_METADATA_BYTES = 16 << 20
# Fields copied into the hashed archive (pcapvision.json): whoever edits metadata.json cannot
# change what the network's outputs mean (class order) or what it expects as input.
BOUND_FIELDS = ("class_names", "input_shape", "target", "representation", "representation_params")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def save_model(model: Any, model_dir: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Path:
    """Write ``model`` to ``model_dir/model.keras`` and ``metadata`` (plus the model's SHA-256) to
    ``model_dir/metadata.json``, each atomically; return the directory.

    ``metadata`` should come from :func:`pcapvision.io.make_metadata` ("stage": "classify") and
    hold ``class_names``. The fields in :data:`BOUND_FIELDS` are also stored inside the archive,
    so the hash of ``model.keras`` covers them. To write a whole model directory as a unit, call
    this inside :func:`pcapvision.outputs.staged_directory`.
    """
    directory = Path(model_dir)
    record = dict(metadata)
    record.setdefault("stage", STAGE)
    record["input_shape"] = [int(d) for d in model.input_shape[1:]]
    record["model_file"] = MODEL_FILE
    # Keras only saves to a name ending in .keras, hence keep_suffix.
    with atomic_path(directory / MODEL_FILE, keep_suffix=True) as tmp:
        model.save(tmp)
        bound = {key: record.get(key) for key in BOUND_FIELDS}
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(RECORD_ENTRY, json.dumps(bound, sort_keys=True, allow_nan=False))
        record["model_sha256"] = sha256_file(tmp)
    problems = metadata_problems(record)
    if problems:
        raise ModelFormatError(f"{directory / METADATA_FILE}: refusing to write invalid metadata: {'; '.join(problems)}")
    write_json_atomic(directory / METADATA_FILE, record)
    log.info("saved model to %s", directory)
    return directory


def is_model_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a pcapvision classify model directory, whole or torn (so a new model
    may replace it whole): its ``metadata.json`` names the classify stage, or it holds nothing but
    the names a model directory holds (a directory torn by an older, non-atomic write)."""
    directory = Path(path)
    try:
        meta = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("stage") == STAGE:
            return True
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    known = {MODEL_FILE, METADATA_FILE, SPLIT_MANIFEST_FILE, "report"}
    return all(p.name in known or p.name.startswith(("evaluation-", ".")) for p in directory.iterdir())


def staged_model_directory(model_dir: str | os.PathLike[str]) -> Any:
    """Context manager: a hidden sibling directory to write a whole model directory into; it
    replaces ``model_dir`` only when complete (the previous model stays until then). Refuses a
    second concurrent writer and a non-empty directory that is not a model directory."""
    return staged_directory(model_dir, replaceable=is_model_directory, what="pcapvision model directory")


def model_directory(model_dir: str | os.PathLike[str]) -> Path:
    """The model directory named by ``model_dir`` (a directory, or the ``.keras`` file in one)."""
    directory = Path(model_dir)
    if directory.suffix == ".keras" and not directory.is_dir():
        directory = directory.parent
    return directory


def read_metadata(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a model directory, checked against its schema (one
    :class:`ModelFormatError` line listing every problem)."""
    directory = model_directory(model_dir)
    if not directory.is_dir():
        raise ModelFormatError(f"{directory}: no such model directory")
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file():
        raise ModelFormatError(f"{directory}: not a pcapvision model directory (no {METADATA_FILE})")
    raw = _read_regular_file(meta_path, MAX_METADATA_BYTES, "metadata")
    try:
        metadata = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFormatError(f"{meta_path}: corrupt metadata ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("stage") != STAGE:
        raise ModelFormatError(f"{meta_path}: not the metadata of a pcapvision classify model")
    problems = metadata_problems(metadata)
    if problems:
        raise ModelFormatError(f"{meta_path}: invalid metadata: {'; '.join(problems)}")
    return metadata


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def metadata_problems(metadata: Mapping[str, Any]) -> list[str]:
    """Every way ``metadata`` breaks the model-directory schema (docs/contracts.md), one phrase each."""
    problems: list[str] = []

    def need(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    names = metadata.get("class_names")
    need(isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)
         and len(set(names)) == len(names),
         f"class_names must be a list of at least two distinct non-empty strings (got {_brief(names)})")
    need(_is_plain_name(metadata.get("model_file"), ".keras"),
         f"model_file must be a file name ending in .keras inside the model directory (got {_brief(metadata.get('model_file'))})")
    need(isinstance(metadata.get("model_sha256"), str) and bool(_SHA256.fullmatch(metadata["model_sha256"])),
         f"model_sha256 must be 64 lowercase hex digits (got {_brief(metadata.get('model_sha256'))})")
    params = metadata.get("params")
    need(isinstance(params, dict), f"params must be an object (got {_brief(params)})")
    if isinstance(params, dict) and "threshold" in params:
        thr = params["threshold"]
        need(_is_number(thr) and 0 <= thr <= 1, f"params.threshold must be a number in [0, 1] (got {_brief(thr)})")
    shape = metadata.get("input_shape")
    need(shape is None or (isinstance(shape, list) and len(shape) == 3
                           and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)),
         f"input_shape must be a list of three positive ints (got {_brief(shape)})")
    for key in ("representation", "target"):
        need(metadata.get(key) is None or isinstance(metadata[key], str), f"{key} must be a string or null (got {_brief(metadata.get(key))})")
    for key in ("representation_params", "dataset", "images_schema", "history", "metrics"):
        need(metadata.get(key) is None or isinstance(metadata[key], dict), f"{key} must be an object or null (got {_brief(metadata.get(key))})")
    dataset = metadata.get("dataset")
    if isinstance(dataset, dict) and dataset.get("name") == "mnist":  # what evaluate/robustness rebuild the split from
        need(isinstance(dataset.get("source"), str) and isinstance(dataset.get("seed"), int)
             and isinstance(dataset.get("data_sha256"), str),
             f"dataset (MNIST) must hold source, seed and data_sha256 (got keys {sorted(dataset)})")
    split = metadata.get("split")
    need(split is None or isinstance(split, dict), f"split must be an object or null (got {_brief(split)})")
    if isinstance(split, dict) and ("manifest_file" in split or "manifest_sha256" in split):
        need(_is_plain_name(split.get("manifest_file"), ".parquet"),
             f"split.manifest_file must be a file name ending in .parquet (got {_brief(split.get('manifest_file'))})")
        need(isinstance(split.get("manifest_sha256"), str) and bool(_SHA256.fullmatch(split["manifest_sha256"])),
             f"split.manifest_sha256 must be 64 lowercase hex digits (got {_brief(split.get('manifest_sha256'))})")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_plain_name(value: Any, suffix: str) -> bool:
    """A bare file name: no directory part, not absolute, not '.'/'..', with ``suffix``."""
    return (isinstance(value, str) and value.endswith(suffix) and value not in (".", "..")
            and "/" not in value and "\\" not in value and "\x00" not in value and not value.startswith("."))


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) under ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        reason = "is a symbolic link" if path.is_symlink() else (exc.strerror or str(exc)).lower()
        raise ModelFormatError(f"{path}: cannot read the {what} file ({reason})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ModelFormatError(f"{path}: the {what} file is not a regular file")
        if info.st_size > limit:
            raise ModelFormatError(f"{path}: the {what} file is {info.st_size} bytes, over the {limit}-byte limit")
        return fh.read(limit + 1)


def contained_file(directory: Path, name: str, what: str) -> Path:
    """``directory/name`` after checking it stays inside ``directory`` (names come from metadata)."""
    path = directory / name
    if Path(name).name != name or path.resolve().parent != directory.resolve():
        raise ModelFormatError(f"{directory}: the {what} {name!r} is outside the model directory")
    return path


def read_split_manifest(model_dir: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Any:
    """The model's split manifest (pandas DataFrame: flow_id, split_group, image_sha256, label,
    split), after checking its bytes against ``split.manifest_sha256`` in ``metadata``.

    Raises :class:`ModelFormatError` when the model has no manifest or the manifest on disk is not
    the one written with this model (a torn or mixed model directory): a split is never used
    unverified.
    """
    import pyarrow.parquet as pq

    directory = model_directory(model_dir)
    split = metadata.get("split") or {}
    if "manifest_sha256" not in split:
        raise ModelFormatError(f"{directory}: the model records no split manifest")
    path = contained_file(directory, split.get("manifest_file", SPLIT_MANIFEST_FILE), "split manifest")
    if not path.exists():
        raise ModelFormatError(f"{path}: the model's split manifest is missing")
    data = _read_regular_file(path, MAX_ARCHIVE_BYTES, "split manifest")
    if hashlib.sha256(data).hexdigest() != split["manifest_sha256"]:
        raise ModelFormatError(
            f"{path}: split manifest does not match the SHA-256 recorded in {METADATA_FILE}; the model directory "
            "is torn or mixed (retrain, or restore it whole)"
        )
    try:
        manifest = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for a corrupt file
        raise ModelFormatError(f"{path}: unreadable split manifest ({exc.__class__.__name__})") from exc
    missing = {"flow_id", "image_sha256", "split"} - set(manifest.columns)
    if missing:
        raise ModelFormatError(f"{path}: split manifest lacks the columns {sorted(missing)}")
    return manifest


def load_model(model_dir: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load ``(keras.Model, metadata)`` from a model directory: the ONE model loader.

    In order: ``metadata.json`` against its schema; ``model_file`` kept inside the directory; the
    archive read once and checked against ``model_sha256``; the split manifest (when the model has
    one) checked against ``split.manifest_sha256``; the archive passed through the gate
    (:func:`pcapvision.classify.gate.check_archive`); the class order and input shape in
    ``metadata.json`` compared with those inside the hashed archive; Keras loads the checked bytes
    in safe mode; the network's layers, input shape and number of outputs are checked. Any
    failure is one :class:`ModelFormatError` line naming the file.
    """
    metadata = read_metadata(model_dir)
    directory = model_directory(model_dir)
    model_path = contained_file(directory, metadata["model_file"], "model_file")
    if not model_path.exists() and not model_path.is_symlink():
        raise ModelFormatError(f"{model_path}: model file is missing")
    data = _read_regular_file(model_path, MAX_ARCHIVE_BYTES, "model")
    if hashlib.sha256(data).hexdigest() != metadata["model_sha256"]:
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ModelFormatError(f"{model_path}: not a Keras model archive")
        raise ModelFormatError(f"{model_path}: file does not match the SHA-256 recorded in {METADATA_FILE}")
    if "manifest_sha256" in (metadata.get("split") or {}):
        read_split_manifest(directory, metadata)
    record = check_archive(data, str(model_path))
    for key in BOUND_FIELDS:
        if key in record and record[key] != metadata.get(key) and not (key == "input_shape" and metadata.get(key) is None):
            raise ModelFormatError(
                f"{directory / METADATA_FILE}: {key} {_brief(metadata.get(key))} differs from the one stored in the "
                f"hashed model archive {_brief(record[key])}; metadata.json was edited"
            )
    if "class_names" not in record:
        raise ModelFormatError(f"{model_path}: the archive holds no class order (saved by an older pcapvision; retrain)")
    model = _keras_load(data, model_path)
    _check_loaded(model, record, model_path)
    metadata.setdefault("input_shape", record.get("input_shape"))
    return model, metadata


def _keras_load(data: bytes, model_path: Path) -> Any:
    """Keras loads a private copy of the checked bytes (never the path, which could change)."""
    import_tensorflow()
    import keras

    with tempfile.TemporaryDirectory(prefix="pcapvision-model-") as private:
        copy = Path(private) / MODEL_FILE
        copy.write_bytes(data)
        try:
            return keras.models.load_model(copy, safe_mode=True, custom_objects=custom_objects())
        except Exception as exc:  # Keras raises ValueError, KeyError, OSError, TypeError... for bad archives
            first = " ".join(str(exc).split())[:200].replace(private, "")
            raise ModelFormatError(f"{model_path}: cannot load the Keras model ({exc.__class__.__name__}: {first})") from exc


def _check_loaded(model: Any, record: Mapping[str, Any], model_path: Path) -> None:
    import keras

    if type(model) is not keras.Sequential:
        raise ModelFormatError(f"{model_path}: loaded a {type(model).__name__}, not a keras.Sequential")
    foreign = sorted({type(layer).__name__ for layer in model.layers} - set(ALLOWED_LAYERS))
    if foreign:
        raise ModelFormatError(f"{model_path}: loaded layers of classes {foreign} that pcapvision does not use")
    shape = record.get("input_shape")
    if shape is not None and list(model.input_shape[1:]) != list(shape):
        raise ModelFormatError(f"{model_path}: model takes inputs of shape {list(model.input_shape[1:])}, not {shape}")
    n_out, n_classes = model.output_shape[-1], len(record["class_names"])
    if len(model.output_shape) != 2 or n_out != n_classes:
        raise ModelFormatError(f"{model_path}: model has {n_out} outputs but metadata lists {n_classes} classes")


__all__ = ["BOUND_FIELDS", "METADATA_FILE", "MODEL_FILE", "SPLIT_MANIFEST_FILE", "contained_file", "is_model_directory",
           "load_model", "metadata_problems", "model_directory", "read_metadata", "read_split_manifest", "save_model",
           "staged_model_directory"]
