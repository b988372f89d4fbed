from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pcapvision.classify import build_cnn, load_model, save_model
from pcapvision.errors import ModelFormatError
from pcapvision.io import make_metadata


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_cnn((28, 28, 1), 3)
    directory = tmp_path_factory.mktemp("artifact") / "model"
    save_model(model, directory, make_metadata("classify", {"seed": 0}, class_names=["a", "b", "c"]))
    return model, directory


def test_round_trip_gives_the_same_predictions_and_metadata(saved):
    model, directory = saved
    loaded, metadata = load_model(directory)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert metadata["class_names"] == ["a", "b", "c"] and metadata["stage"] == "classify"
    assert len(metadata["model_sha256"]) == 64 and "tensorflow" in metadata["library_versions"]
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]  # no temporary left behind


def _copy(saved, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved[1], target)
    return target


def test_corrupt_model_file_is_a_one_line_model_format_error(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    (directory / "model.keras").write_bytes(b"garbage")
    with pytest.raises(ModelFormatError, match="not a Keras model archive") as info:
        load_model(directory)
    assert "\n" not in str(info.value)


def test_swapped_model_file_fails_the_hash_check(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    build_cnn((28, 28, 1), 3).save(directory / "model.keras")
    with pytest.raises(ModelFormatError, match="does not match the SHA-256"):
        load_model(directory)


def test_foreign_keras_archive_is_refused_by_the_gate(saved, tmp_path):
    import zipfile

    directory = _copy(saved, tmp_path)
    with zipfile.ZipFile(directory / "model.keras", "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Lambda", "config": {"function": "x"}}))
    meta = json.loads((directory / "metadata.json").read_text())
    from pcapvision.io import sha256_file

    meta["model_sha256"] = sha256_file(directory / "model.keras")
    (directory / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="refused: archive must hold exactly"):
        load_model(directory)


@pytest.mark.parametrize(("metadata_text", "match"), [
    (None, "no metadata.json"),
    ("{not json", "corrupt metadata"),
    (json.dumps({"stage": "image"}), "not the metadata of a pcapvision classify model"),
])
def test_missing_corrupt_or_foreign_metadata(saved, tmp_path, metadata_text, match):
    directory = _copy(saved, tmp_path)
    if metadata_text is None:
        (directory / "metadata.json").unlink()
    else:
        (directory / "metadata.json").write_text(metadata_text)
    with pytest.raises(ModelFormatError, match=match):
        load_model(directory)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model directory"):
        load_model(tmp_path / "absent")
