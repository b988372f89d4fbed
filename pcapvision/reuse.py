"""When may ``pcapvision run`` reuse a stage's output? Decided from the artifact itself.

A stage's output is reused only when both hold:

1. the artifact's own metadata says it was made from the current inputs (content hashes) with
   the parameters asked for now; the check functions below read that metadata and return the
   reason the artifact does *not* fit (``None`` when it fits);
2. the run record (``run.json``) lists the stage as finished, with the same artifact hash, inputs
   and parameters. A stage's entry is removed before the stage starts and written again as soon
   as it finishes, so a stage killed midway (whose side files may be half new) is redone.

The run record alone is never trusted: after a kill or a hand-made change in ``OUT`` it can
describe an artifact that is no longer there.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pcapvision.errors import PcapvisionError
from pcapvision.io import read_parquet_metadata, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

Check = Callable[[], "str | None"]


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with stored metadata."""
    return json.loads(json.dumps(value, default=str))


def _mismatch(what: str, recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first key of ``wanted`` whose value ``recorded`` does not hold, as a sentence."""
    recorded = _jsonable(dict(recorded))
    for key, value in _jsonable(dict(wanted)).items():
        if recorded.get(key) != value:
            return f"{what} was made with {key}={recorded.get(key)!r}, not {value!r}"
    return None


def check_images(images: Path, flows_sha256: str, params: Mapping[str, Any]) -> str | None:
    """Does the images table at ``images`` come from flows with ``flows_sha256`` rendered with ``params``?"""
    try:
        meta = read_parquet_metadata(images)
    except (PcapvisionError, OSError, ValueError) as exc:
        return f"{images.name} is unreadable ({type(exc).__name__})"
    if meta.get("stage") != "image":
        return f"{images.name} is not a pcapvision images table"
    if (meta.get("input") or {}).get("sha256") != flows_sha256:
        return f"{images.name} was rendered from other flows"
    return _mismatch(images.name, meta.get("params") or {}, params)


def check_model(model_dir: Path, metadata: Mapping[str, Any] | None, data_sha256: str,
                params: Mapping[str, Any]) -> str | None:
    """Is ``model_dir`` whole (model file and split manifest match the hashes in its metadata),
    trained on data with ``data_sha256``, with ``params``? ``metadata``: its metadata.json, or
    ``None`` when that is missing or unreadable."""
    if metadata is None:
        return "the model directory has no readable metadata"
    model_file = model_dir / str(metadata.get("model_file", "model.keras"))
    if model_file.parent != model_dir or not model_file.is_file() or sha256_file(model_file) != metadata.get("model_sha256"):
        return "the model file does not match its metadata"
    split = metadata.get("split") or {}
    if split.get("manifest_file"):
        manifest = model_dir / str(split["manifest_file"])
        if not manifest.is_file() or sha256_file(manifest) != split.get("manifest_sha256"):
            return "the split manifest does not match the model's metadata"
    if metadata.get("data_sha256") != data_sha256:
        return "the model was trained on other data"
    return _mismatch("the model", metadata.get("params") or {}, params)


def check_robustness(report_json: Path, model_sha256: str | None, data_sha256: str,
                     params: Mapping[str, Any]) -> str | None:
    """Was ``robustness.json`` made for the model with ``model_sha256`` on data with ``data_sha256``,
    with ``params``?"""
    try:
        record = json.loads(report_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{report_json.name} is unreadable ({type(exc).__name__})"
    if not isinstance(record, dict) or record.get("stage") != "robustness":
        return f"{report_json.name} is not a pcapvision robustness record"
    if (record.get("model") or {}).get("model_sha256") != model_sha256:
        return "the robustness report is about another model"
    if (record.get("data") or {}).get("data_sha256") != data_sha256:
        return "the robustness report is about other data"
    return _mismatch("the robustness report", record.get("params") or {}, params)


class RunRecord:
    """``run.json``: rewritten atomically whenever a stage starts or finishes."""

    def __init__(self, path: Path, header: Mapping[str, Any], *, fresh: bool) -> None:
        self.path = path
        self.previous = {} if fresh else _read_json(path).get("stages", {})
        if not isinstance(self.previous, dict):
            self.previous = {}
        # Stages not (yet) redone keep their previous entry, so run.json always lists every
        # stage known to be finished.
        self.data: dict[str, Any] = {**header, "stages": dict(self.previous)}

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def start(self, name: str) -> None:
        """Forget ``name``'s previous completion before it runs: if it is killed, it is redone."""
        if self.data["stages"].pop(name, None) is not None:
            self.save()

    def finish(self, name: str, entry: Mapping[str, Any]) -> None:
        self.data["stages"][name] = dict(entry)
        self.save()

    def finished(self, name: str) -> dict[str, Any]:
        entry = self.previous.get(name)
        return entry if isinstance(entry, dict) else {}


def run_stage(
    record: RunRecord,
    name: str,
    artifact: Path,
    *,
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    check: Check,
    action: Callable[[], Any],
    force: bool = False,
    clock: Callable[[], float] | None = None,
) -> tuple[bool, Any]:
    """Reuse ``name``'s output ``artifact`` when it fits (see the module docstring), else run
    ``action``. Returns ``(reused, action's result or None)``; the stage's entry in the run
    record is written as soon as it is decided or finished."""
    import time

    clock = clock or time.perf_counter
    reason = _why_not_reuse(record, name, artifact, inputs, params, check, force)
    if reason is None:
        log.info("%s: up to date (%s), reused", name, artifact)
        record.finish(name, {**record.finished(name), "reused": True})
        return True, None
    log.info("%s: %s; running it", name, reason)
    record.start(name)
    started = clock()
    result = action()
    record.finish(name, {
        "output": os.fspath(artifact), "artifact_sha256": sha256_file(artifact), "inputs": _jsonable(dict(inputs)),
        "params": _jsonable(dict(params)), "reused": False, "seconds": round(clock() - started, 2),
    })
    return False, result


def _why_not_reuse(record: RunRecord, name: str, artifact: Path, inputs: Mapping[str, Any],
                   params: Mapping[str, Any], check: Check, force: bool) -> str | None:
    if force:
        return "--force given"
    if not artifact.is_file():
        return f"no {artifact.name} yet"
    reason = check()
    if reason is not None:
        return reason
    done = record.finished(name)
    if not done:
        return "the previous run did not finish this stage"
    if done.get("artifact_sha256") != sha256_file(artifact):
        return f"{artifact.name} changed since the previous run finished this stage"
    if done.get("inputs") != _jsonable(dict(inputs)) or done.get("params") != _jsonable(dict(params)):
        return "its inputs or parameters changed"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
