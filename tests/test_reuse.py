"""Stage reuse decisions (pcapvision.reuse) on stand-in artifacts: no TensorFlow involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcapvision.reuse import RunRecord, check_model, check_robustness, run_stage


def _stage(record: RunRecord, artifact: Path, content: str, calls: list[str], *, check=lambda: None, params=None):
    def action():
        calls.append(content)
        artifact.write_text(content)
        return content

    return run_stage(record, "s", artifact, inputs={"x": "1"}, params=params or {"p": 1}, check=check, action=action)


def test_run_stage_reuses_only_a_finished_unchanged_artifact(tmp_path):
    path, artifact, calls = tmp_path / "run.json", tmp_path / "a.txt", []
    assert _stage(RunRecord(path, {}, fresh=False), artifact, "one", calls) == (False, "one")
    entry = json.loads(path.read_text())["stages"]["s"]
    assert entry["inputs"] == {"x": "1"} and entry["params"] == {"p": 1} and len(entry["artifact_sha256"]) == 64

    assert _stage(RunRecord(path, {}, fresh=False), artifact, "two", calls) == (True, None)
    assert calls == ["one"]
    # Other parameters, a failing artifact check, a changed artifact, a fresh record: redone.
    assert _stage(RunRecord(path, {}, fresh=False), artifact, "three", calls, params={"p": 2})[0] is False
    assert _stage(RunRecord(path, {}, fresh=False), artifact, "four", calls, check=lambda: "stale")[0] is False
    artifact.write_text("edited by hand")
    assert _stage(RunRecord(path, {}, fresh=False), artifact, "five", calls)[0] is False
    assert _stage(RunRecord(path, {}, fresh=True), artifact, "six", calls)[0] is False
    assert calls == ["one", "three", "four", "five", "six"]


def test_a_stage_that_dies_is_forgotten_by_the_run_record(tmp_path):
    path, artifact = tmp_path / "run.json", tmp_path / "a.txt"
    _stage(RunRecord(path, {}, fresh=False), artifact, "one", [])

    def dies():
        artifact.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(RunRecord(path, {}, fresh=False), "s", artifact, inputs={"x": "2"}, params={"p": 1},
                  check=lambda: None, action=dies)
    assert "s" not in json.loads(path.read_text())["stages"]
    calls: list[str] = []
    # Even with the first run's inputs, the half-written artifact is not reused.
    assert _stage(RunRecord(path, {}, fresh=False), artifact, "again", calls)[0] is False


def test_check_model_verifies_file_manifest_data_and_params(tmp_path):
    import hashlib

    (tmp_path / "model.keras").write_bytes(b"model")
    (tmp_path / "split_manifest.parquet").write_bytes(b"manifest")
    meta = {"model_file": "model.keras", "model_sha256": hashlib.sha256(b"model").hexdigest(),
            "split": {"manifest_file": "split_manifest.parquet", "manifest_sha256": hashlib.sha256(b"manifest").hexdigest()},
            "data_sha256": "d", "params": {"epochs": 2, "arch": "cnn"}}
    assert check_model(tmp_path, meta, "d", {"epochs": 2}) is None
    assert "epochs=2, not 3" in check_model(tmp_path, meta, "d", {"epochs": 3})
    assert "other data" in check_model(tmp_path, meta, "e", {"epochs": 2})
    assert "no readable metadata" in check_model(tmp_path, None, "d", {})
    assert "does not match" in check_model(tmp_path, {**meta, "model_file": "../model.keras"}, "d", {})
    (tmp_path / "split_manifest.parquet").write_bytes(b"another split")
    assert "split manifest" in check_model(tmp_path, meta, "d", {"epochs": 2})
    (tmp_path / "model.keras").write_bytes(b"another model")
    assert "model file" in check_model(tmp_path, meta, "d", {"epochs": 2})


def test_check_robustness_reads_the_record(tmp_path):
    report = tmp_path / "robustness.json"
    report.write_text(json.dumps({"stage": "robustness", "model": {"model_sha256": "m"}, "data": {"data_sha256": "d"},
                                  "params": {"suite": "quick", "seed": 0, "config": {"eps": [0.1]}}}))
    assert check_robustness(report, "m", "d", {"suite": "quick", "config": {"eps": (0.1,)}}) is None
    assert "another model" in check_robustness(report, "n", "d", {})
    assert "other data" in check_robustness(report, "m", "e", {})
    assert "seed=0, not 1" in check_robustness(report, "m", "d", {"seed": 1})
    report.write_text("{torn")
    assert "unreadable" in check_robustness(report, "m", "d", {})
