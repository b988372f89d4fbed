"""The model-archive gate: a ``.keras`` file is checked against an allowlist before Keras reads it.

Keras safe mode refuses Python bytecode in a model, but a config can still name public Keras
classes that load code or graphs of their own (a ``Lambda`` whose function is a reference to
``keras.layers.TFSMLayer`` loads a TensorFlow SavedModel shipped beside the model, and a
SavedModel's initialisers run arbitrary TensorFlow ops). pcapvision therefore reads
``config.json`` out of the zip itself and accepts only what its own architectures
(:mod:`pcapvision.classify.model`) produce: a ``Sequential`` of the layer classes listed in
:data:`ALLOWED_LAYERS`, each with only the config keys listed there, Glorot/zeros initialisers,
the Adam or SGD optimiser, and nothing else in the archive. Anything else is a one-line
:class:`ModelFormatError` before Keras sees a byte of the file. See ``docs/security.md``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

from pcapvision.errors import ModelFormatError

CONFIG_ENTRY = "config.json"
KERAS_METADATA_ENTRY = "metadata.json"
WEIGHTS_ENTRY = "model.weights.h5"
RECORD_ENTRY = "pcapvision.json"
ARCHIVE_ENTRIES = frozenset({CONFIG_ENTRY, KERAS_METADATA_ENTRY, WEIGHTS_ENTRY, RECORD_ENTRY})

MAX_ARCHIVE_BYTES = 512 << 20
MAX_JSON_ENTRY_BYTES = 1 << 20
MAX_LAYERS = 64
MAX_DEPTH = 8
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_COMMON = frozenset({"name", "trainable", "dtype"})
_KERNEL = frozenset({"activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
                     "bias_regularizer", "kernel_constraint", "bias_constraint"})
_CONV = _COMMON | _KERNEL | {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups",
                             "activity_regularizer"}
_POOL = _COMMON | {"pool_size", "strides", "padding", "data_format"}
# Layer class -> the config keys Keras writes for it (Keras 3). Nothing outside this table loads.
ALLOWED_LAYERS: dict[str, frozenset[str]] = {
    "InputLayer": frozenset({"batch_shape", "dtype", "name", "optional", "ragged", "sparse"}),
    "Conv2D": _CONV, "Conv1D": _CONV, "MaxPooling2D": _POOL, "MaxPooling1D": _POOL,
    "Reshape": _COMMON | {"target_shape"},
    "Flatten": _COMMON | {"data_format"},
    "Dropout": _COMMON | {"rate", "seed", "noise_shape"},
    "Dense": _COMMON | _KERNEL | {"units", "activity_regularizer", "quantization_config", "lora_rank", "lora_alpha"},
    # pcapvision's own layer (cnn-embed), resolved by Keras to pcapvision.classify.model's class.
    "ByteEmbeddingLayer": _COMMON | {"dim"},
}
# Where each layer class must come from: (module, registered_name); Keras' own layers by default.
LAYER_ORIGINS: dict[str, tuple[str, str | None]] = {
    "ByteEmbeddingLayer": ("pcapvision.classify.model", "pcapvision>ByteEmbeddingLayer"),
}
# Serialised helper objects a layer or the optimiser may carry: (module, class_name).
ALLOWED_OBJECTS = frozenset({
    ("keras", "DTypePolicy"), ("keras.initializers", "GlorotUniform"), ("keras.initializers", "Zeros"),
    ("keras.optimizers", "Adam"), ("keras.optimizers", "SGD"),
})
# Keys whose value must be one of a few strings (Keras resolves them by name).
STRING_CHOICES: dict[str, frozenset[str]] = {
    "activation": frozenset({"relu", "softmax", "linear"}),
    "padding": frozenset({"valid", "same"}),
    "data_format": frozenset({"channels_last"}),
    "loss": frozenset({"sparse_categorical_crossentropy"}),
    "metrics": frozenset({"accuracy"}),
}
# Keys that may only be null: each would otherwise name a class or function to deserialise.
NULL_ONLY = frozenset({"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                       "bias_constraint", "quantization_config", "registered_name", "loss_weights",
                       "weighted_metrics", "noise_shape"})
_OBJECT_KEYS = frozenset({"module", "class_name", "config", "registered_name", "shared_object_id"})
_LAYER_KEYS = frozenset({"module", "class_name", "config", "registered_name", "build_config"})
_MODEL_KEYS = _LAYER_KEYS | {"compile_config"}
_SEQUENTIAL_KEYS = frozenset({"name", "trainable", "dtype", "layers", "build_input_shape"})
_COMPILE_KEYS = frozenset({"optimizer", "loss", "loss_weights", "metrics", "weighted_metrics", "run_eagerly",
                           "steps_per_execution", "jit_compile"})


class _Refused(Exception):
    """Internal: the reason an archive is refused (turned into one ModelFormatError line)."""


def check_archive(data: bytes, source: str) -> dict[str, Any]:
    """Check the bytes of a ``.keras`` archive; return the pcapvision record stored inside it.

    Raises :class:`ModelFormatError` naming ``source`` and the first thing not allowed: the zip
    structure (no bytes before or after it, exactly the expected entries, sizes within bounds,
    an HDF5 weights file), then every object in ``config.json`` against the allowlist.
    """
    try:
        record = _check_archive(data)
    except _Refused as exc:
        raise ModelFormatError(f"{source}: refused: {exc}") from None
    return record


def _check_archive(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise _Refused(f"archive is {len(data)} bytes, over the {MAX_ARCHIVE_BYTES}-byte limit")
    if not data.startswith(b"PK\x03\x04"):
        raise _Refused("not a Keras model archive (a .keras file is a zip starting at byte 0)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _Refused(f"not a Keras model archive ({exc})") from None
    names = [info.filename for info in infos]
    if len(names) != len(set(names)) or set(names) != ARCHIVE_ENTRIES:
        extra = sorted(set(names) - ARCHIVE_ENTRIES)
        missing = sorted(ARCHIVE_ENTRIES - set(names))
        dup = sorted({n for n in names if names.count(n) > 1})
        parts = [f"unexpected entries {extra}" if extra else "", f"missing entries {missing}" if missing else "",
                 f"duplicate entries {dup}" if dup else ""]
        raise _Refused("archive must hold exactly " + ", ".join(sorted(ARCHIVE_ENTRIES)) + ": "
                       + "; ".join(p for p in parts if p))
    _check_layout(data, infos)
    for info in infos:
        if info.flag_bits & 0x1:
            raise _Refused(f"entry {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"entry {info.filename} uses compression method {info.compress_type}")
        limit = MAX_ARCHIVE_BYTES if info.filename == WEIGHTS_ENTRY else MAX_JSON_ENTRY_BYTES
        if info.file_size > limit:
            raise _Refused(f"entry {info.filename} is {info.file_size} bytes, over the {limit}-byte limit")
    try:
        with archive.open(WEIGHTS_ENTRY) as fh:
            if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise _Refused(f"{WEIGHTS_ENTRY} is not an HDF5 file")
        config = _read_json(archive, CONFIG_ENTRY)
        _read_json(archive, KERAS_METADATA_ENTRY)
        record = _read_json(archive, RECORD_ENTRY)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _Refused(f"corrupt archive ({exc})") from None
    _check_model_config(config)
    if not isinstance(record, dict):
        raise _Refused(f"{RECORD_ENTRY} is not a JSON object")
    return record


def _check_layout(data: bytes, infos: list[zipfile.ZipInfo]) -> None:
    """No bytes before the first entry, between entries, or after the central directory: a file
    that is also something else (an HDF5 or a second archive) is refused."""
    offsets = sorted(info.header_offset for info in infos)
    if offsets[0] != 0:
        raise _Refused("data before the first archive entry")
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0 or len(data) - eocd != 22:  # our writer never adds an archive comment
        raise _Refused("data after the end of the archive (or an archive comment)")


def _read_json(archive: zipfile.ZipFile, name: str) -> Any:
    raw = archive.read(name)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(f"{name} is not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _check_model_config(config: Any) -> None:
    if not isinstance(config, dict):
        raise _Refused(f"{CONFIG_ENTRY} is not a JSON object")
    _check_keys(config, _MODEL_KEYS, "model")
    if (config.get("module"), config.get("class_name")) != ("keras", "Sequential"):
        raise _Refused(f"model class {config.get('module')}.{config.get('class_name')} is not allowed "
                       "(pcapvision models are keras.Sequential)")
    _check_null(config, "registered_name", "model")
    body = config.get("config")
    if not isinstance(body, dict):
        raise _Refused("model config is not an object")
    _check_keys(body, _SEQUENTIAL_KEYS, "Sequential config")
    layers = body.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise _Refused(f"the model must list 1 to {MAX_LAYERS} layers")
    for key, value in body.items():
        if key == "dtype":
            _check_dtype(value, "model")
        elif key != "layers":
            _check_plain(value, f"model {key}")
    for position, layer in enumerate(layers):
        _check_layer(layer, position)
    _check_build_config(config.get("build_config"), "model")
    compile_config = config.get("compile_config")
    if compile_config is not None:
        _check_compile_config(compile_config)


def _check_layer(layer: Any, position: int) -> None:
    where = f"layer {position}"
    if not isinstance(layer, dict):
        raise _Refused(f"{where} is not an object")
    _check_keys(layer, _LAYER_KEYS, where)
    cls = layer.get("class_name")
    module, registered = LAYER_ORIGINS.get(cls, ("keras.layers", None)) if isinstance(cls, str) else ("", None)
    if cls not in ALLOWED_LAYERS or layer.get("module") != module:
        raise _Refused(f"{where}: layer class {layer.get('module')}.{cls} is not allowed "
                       f"(allowed: {', '.join(sorted(ALLOWED_LAYERS))})")
    where = f"layer {position} ({cls})"
    if layer.get("registered_name") != registered:
        raise _Refused(f"{where}: registered_name must be {json.dumps(registered)}, got {_short(layer.get('registered_name'))}")
    config = layer.get("config")
    if not isinstance(config, dict):
        raise _Refused(f"{where}: config is not an object")
    _check_keys(config, ALLOWED_LAYERS[cls], where)
    for key, value in config.items():
        _check_field(key, value, f"{where} {key}")
    _check_build_config(layer.get("build_config"), where)


def _check_field(key: str, value: Any, where: str) -> None:
    if key in NULL_ONLY:
        if value is not None:
            raise _Refused(f"{where} must be null, got {_short(value)}")
    elif key in STRING_CHOICES:
        if not isinstance(value, str) or value not in STRING_CHOICES[key]:
            raise _Refused(f"{where} {_short(value)} is not allowed (allowed: {', '.join(sorted(STRING_CHOICES[key]))})")
    elif key == "dtype":
        _check_dtype(value, where)
    elif key.endswith("_initializer"):
        _check_object(value, where, module="keras.initializers")
    else:
        _check_plain(value, where)


def _check_dtype(value: Any, where: str) -> None:
    if value == "float32":
        return
    _check_object(value, where, module="keras")


def _check_object(value: Any, where: str, *, module: str) -> None:
    if not isinstance(value, dict):
        raise _Refused(f"{where}: expected a serialised {module} object, got {_short(value)}")
    _check_keys(value, _OBJECT_KEYS, where)
    key = (value.get("module"), value.get("class_name"))
    if key[0] != module or key not in ALLOWED_OBJECTS:
        raise _Refused(f"{where}: class {key[0]}.{key[1]} is not allowed")
    _check_null(value, "registered_name", where)
    config = value.get("config", {})
    if not isinstance(config, dict):
        raise _Refused(f"{where}: config is not an object")
    for name, item in config.items():
        _check_plain(item, f"{where} {name}")
    if "shared_object_id" in value and not isinstance(value["shared_object_id"], int):
        raise _Refused(f"{where}: shared_object_id is not an int")


def _check_compile_config(config: Any) -> None:
    if not isinstance(config, dict):
        raise _Refused("compile_config is not an object")
    _check_keys(config, _COMPILE_KEYS, "compile_config")
    for key, value in config.items():
        where = f"compile_config {key}"
        if key == "optimizer":
            _check_object(value, where, module="keras.optimizers")
        elif key == "metrics":
            if value is not None and (not isinstance(value, list)
                                      or not all(isinstance(m, str) and m in STRING_CHOICES["metrics"] for m in value)):
                raise _Refused(f"{where} {_short(value)} is not allowed (allowed: accuracy)")
        else:
            _check_field(key, value, where)


def _check_build_config(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _Refused(f"{where}: build_config is not an object")
    _check_keys(value, frozenset({"input_shape"}), f"{where} build_config")
    _check_plain(value.get("input_shape"), f"{where} build_config input_shape")


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise _Refused(f"{where}: config keys {unknown} are not allowed")


def _check_null(obj: Mapping[str, Any], key: str, where: str) -> None:
    if obj.get(key) is not None:
        raise _Refused(f"{where}: {key} must be null, got {_short(obj.get(key))}")


def _check_plain(value: Any, where: str, depth: int = 0) -> None:
    """Scalars and (nested, shallow) lists of scalars only: no object Keras would deserialise."""
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and len(value) > 256:
            raise _Refused(f"{where}: string longer than 256 characters")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"{where}: non-finite number")
        return
    if isinstance(value, list) and depth < MAX_DEPTH and len(value) <= 64:
        for item in value:
            _check_plain(item, where, depth + 1)
        return
    raise _Refused(f"{where}: {_short(value)} is not allowed here (only numbers, strings and lists of them)")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["ALLOWED_LAYERS", "ARCHIVE_ENTRIES", "LAYER_ORIGINS", "RECORD_ENTRY", "check_archive"]
