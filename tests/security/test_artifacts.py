"""Torn, mixed and concurrent artifacts: a model directory is written as a unit, its split is
verified before use, report files are swapped in together, and a second writer is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from pcapvision.classify import build_mlp, load_model, read_split_manifest, save_model, staged_model_directory
from pcapvision.errors import LockedError, ModelFormatError, ParameterError
from pcapvision.io import make_metadata, sha256_file, write_parquet_atomic
from pcapvision.outputs import output_lock, replace_files_together, staged_directory


def _model_with_manifest(directory, test_ids=("f1",)):
    ids = ["f0", *test_ids]
    manifest = write_parquet_atomic(pa.table({"flow_id": ids, "image_sha256": [f"sha-{i}" for i in ids],
                                              "split": ["train"] + ["test"] * len(test_ids)}),
                                    directory / "split_manifest.parquet")
    split = {"manifest_file": "split_manifest.parquet", "manifest_sha256": sha256_file(manifest)}
    save_model(build_mlp((28, 28, 1), 2), directory, make_metadata("classify", {}, class_names=["a", "b"], split=split))
    return directory


def test_a_manifest_from_another_training_is_refused(tmp_path):
    model = _model_with_manifest(tmp_path / "m")
    other = _model_with_manifest(tmp_path / "other", test_ids=("f1", "f2", "f3"))
    _, metadata = load_model(model)
    assert list(read_split_manifest(model, metadata)["flow_id"]) == ["f0", "f1"]
    shutil.copy(other / "split_manifest.parquet", model / "split_manifest.parquet")  # a torn/mixed directory
    for call in (lambda: load_model(model), lambda: read_split_manifest(model, metadata)):
        with pytest.raises(ModelFormatError, match="split manifest does not match the SHA-256 recorded in metadata.json"):
            call()
    (model / "split_manifest.parquet").unlink()
    with pytest.raises(ModelFormatError, match="split manifest is missing"):
        load_model(model)


def test_staged_directory_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with staged_directory(target) as stage:
        (stage / "a.txt").write_text("old")
        (stage / "stale.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), staged_directory(target) as stage:
        (stage / "a.txt").write_text("new")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "stale.txt"] and (target / "a.txt").read_text() == "old"
    with staged_directory(target) as stage:
        (stage / "a.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["a.txt"] and (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_interrupted_training_leaves_the_previous_model_directory_intact(tmp_path, monkeypatch):
    from pcapvision.classify import pipeline
    from tests.classify.conftest import toy_images, write_images_table

    x, y = toy_images(80, seed=1)
    images = write_images_table(tmp_path / "images.parquet", np.rint(x[..., 0] * 255).astype(np.uint8),
                                np.array(["malicious", "normal"])[y], np.array(["fa", "fb"])[y], [f"g{i % 8}" for i in range(80)])
    model_dir = _model_with_manifest(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    monkeypatch.setattr(pipeline, "train_model", lambda *a, **k: (build_mlp((28, 28, 1), 2), {}))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_model", killed)  # after the new manifest was written
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_images(images, model_dir, epochs=1)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.") and p.name.endswith(".tmp")]
    load_model(model_dir)


def test_a_directory_that_is_not_a_model_is_never_replaced(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="is not empty and is not a pcapvision model directory"), \
            staged_model_directory(precious):
        pass  # pragma: no cover - refused before the body runs
    assert (precious / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="exists and is not a directory"), staged_model_directory(tmp_path / "file"):
        pass  # pragma: no cover


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    target = tmp_path / "model"
    with staged_model_directory(target):
        with pytest.raises(LockedError, match=r"\.model\.lock: another writer of this pcapvision model directory is running"), \
                output_lock(target):
            pass  # pragma: no cover
    with output_lock(target):  # released with its holder
        pass


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    target = tmp_path / "model"
    (tmp_path / ".model.ab12cd_9.tmp").mkdir()
    (tmp_path / ".model.ab12cd_9.tmp" / "model.keras").write_bytes(b"half")
    (tmp_path / ".model.zz12cd_9.parquet.tmp").write_bytes(b"half")
    (tmp_path / ".model.parquet.xy12cd_9.tmp").write_bytes(b"another output's temporary")
    with staged_directory(target) as stage:
        (stage / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", ".model.parquet.xy12cd_9.tmp", "model"]


def test_report_files_are_swapped_in_together(tmp_path):
    out = tmp_path / "report"
    replace_files_together(out, {"a.json": lambda p: p.write_text("old"), "b.html": lambda p: p.write_text("old")})

    def broken(path):
        raise OSError(28, "No space left on device", str(path))

    with pytest.raises(OSError, match="No space left"):
        replace_files_together(out, {"a.json": lambda p: p.write_text("new"), "b.html": broken})
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.json": "old", "b.html": "old"}



def test_a_torn_model_directory_is_replaced_but_foreign_files_are_not(tmp_path):
    from pcapvision.classify.artifact import is_model_directory

    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "split_manifest.parquet").write_bytes(b"half")
    (torn / "evaluation-images").mkdir()
    assert is_model_directory(torn)
    (torn / "thesis.tex").write_text("keep")
    assert not is_model_directory(torn)


def test_a_second_robustness_run_into_the_same_report_is_refused(tmp_path):
    from pcapvision.robustness import run_suite

    out = tmp_path / "report"
    with output_lock(out, what="robustness run into this directory"), \
            pytest.raises(LockedError, match="another robustness run into this directory is running"):
        run_suite(tmp_path / "no-model", None, out)
