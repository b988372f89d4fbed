"""Hostile model directories, made the way an attacker who can write a model directory would:
rebuild ``model.keras`` with a changed config, extra entries or bytes around it, and rewrite the
SHA-256 in ``metadata.json`` to match (so the hash check alone cannot help)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcapvision.io import sha256_file


def read_archive(model_dir: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(model_dir / "model.keras") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_archive(entries: dict[str, bytes], *, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return prefix + buf.getvalue() + suffix


def rehash(model_dir: Path, **metadata_changes: Any) -> None:
    """Rewrite metadata.json's model_sha256 to the file on disk (and apply ``metadata_changes``)."""
    meta_path = model_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(metadata_changes)
    model_file = model_dir / meta.get("model_file", "model.keras")
    if model_file.is_file():
        meta["model_sha256"] = sha256_file(model_file)
    meta_path.write_text(json.dumps(meta))


def crafted_copy(source: Path, target: Path, *, config: Callable[[dict], dict | None] | None = None,
                 extra: dict[str, bytes] | None = None, drop: tuple[str, ...] = (), record: Callable[[dict], None] | None = None,
                 prefix: bytes = b"", suffix: bytes = b"") -> Path:
    """A copy of model directory ``source`` at ``target`` whose archive was rebuilt: ``config``
    edits config.json (in place or by returning a new one), ``record`` edits pcapvision.json,
    ``extra`` adds entries, ``drop`` removes some, ``prefix``/``suffix`` wrap the zip in bytes.
    The metadata hash is rewritten to match, as an attacker would."""
    shutil.copytree(source, target)
    entries = read_archive(target)
    if config is not None:
        cfg = copy.deepcopy(json.loads(entries["config.json"]))
        cfg = config(cfg) or cfg
        entries["config.json"] = json.dumps(cfg).encode()
    if record is not None:
        rec = json.loads(entries["pcapvision.json"])
        record(rec)
        entries["pcapvision.json"] = json.dumps(rec).encode()
    for name in drop:
        entries.pop(name)
    entries.update(extra or {})
    (target / "model.keras").write_bytes(write_archive(entries, prefix=prefix, suffix=suffix))
    rehash(target)
    return target


def layers(cfg: dict) -> list[dict]:
    return cfg["config"]["layers"]


def lambda_layer(function: Any) -> dict:
    """A keras.layers.Lambda layer config calling ``function`` (a serialised reference or bytecode)."""
    return {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "gadget", "trainable": True, "dtype": "float32", "function": function,
                   "arguments": {}, "output_shape": None, "mask": None},
    }


def tfsm_reference(saved_model_dir: str) -> dict:
    """The reference to the public keras.layers.TFSMLayer class that passes Keras safe mode."""
    return {"module": "keras.layers", "class_name": "TFSMLayer", "registered_name": None,
            "config": {"filepath": saved_model_dir, "call_endpoint": "serve", "name": "tfsm"}}
