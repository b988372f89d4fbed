"""Crafted model directories: nothing outside pcapvision's own architectures reaches Keras.

Every hostile archive here carries a rewritten ``model_sha256`` (whoever replaces a model rewrites
the hash beside it), so only the gate stands between it and Keras. The ``keras_untouched``
fixture makes any call into Keras' loader fail the test: a refusal must come *before* Keras
reads a byte of the file.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import zipfile

import numpy as np
import pytest

from pcapvision.classify import ARCHITECTURES, build_cnn, build_mlp, build_model, load_model, save_model
from pcapvision.errors import ModelFormatError
from pcapvision.io import make_metadata
from tests.security.crafted_models import crafted_copy, lambda_layer, layers, read_archive, rehash, tfsm_reference, write_archive


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gate") / "model"
    save_model(build_cnn((28, 28, 1), 2), directory,
               make_metadata("classify", {"threshold": 0.5}, class_names=["malicious", "normal"], target="label"))
    return directory


@pytest.fixture
def keras_untouched(monkeypatch):
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError("the crafted archive reached keras.models.load_model")

    monkeypatch.setattr(keras.models, "load_model", refuse)
    monkeypatch.setattr(keras.saving, "load_model", refuse)


def _refused(directory, match):
    with pytest.raises(ModelFormatError, match=match) as info:
        load_model(directory)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_every_architecture_passes_the_gate_and_round_trips(tmp_path):
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    for arch in ARCHITECTURES:
        model = build_model(arch, (28, 28, 1), 4)
        out = tmp_path / arch
        save_model(model, out, make_metadata("classify", {"arch": arch}, class_names=list("abcd")))
        loaded, metadata = load_model(out)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
        assert metadata["input_shape"] == [28, 28, 1]


def test_tfsmlayer_reference_in_a_lambda_is_refused_before_keras(model_dir, tmp_path, keras_untouched):
    # The gadget: safe mode allows a *reference* to the public TFSMLayer class, which loads a
    # SavedModel shipped inside the model directory and runs its initialisers.
    payload = tmp_path / "crafted" / "payload"
    crafted = crafted_copy(model_dir, tmp_path / "crafted",
                           config=lambda cfg: layers(cfg).insert(1, lambda_layer(tfsm_reference(str(payload)))))
    payload.mkdir()
    (payload / "saved_model.pb").write_bytes(b"\x08\x01")
    message = _refused(crafted, "refused: layer 1: layer class keras.layers.Lambda is not allowed")
    assert str(crafted / "model.keras") in message


def test_tfsmlayer_as_a_layer_is_refused(model_dir, tmp_path, keras_untouched):
    crafted = crafted_copy(model_dir, tmp_path / "crafted", config=lambda cfg: layers(cfg).insert(1, tfsm_reference("x")))
    _refused(crafted, "layer class keras.layers.TFSMLayer is not allowed")


def test_python_lambda_bytecode_is_refused(model_dir, tmp_path, keras_untouched):
    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    function = {"class_name": "__lambda__", "config": {"code": code, "defaults": None, "closure": None}}
    crafted = crafted_copy(model_dir, tmp_path / "crafted", config=lambda cfg: layers(cfg).insert(1, lambda_layer(function)))
    _refused(crafted, "Lambda is not allowed")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda cfg: layers(cfg).insert(1, {**layers(cfg)[1], "class_name": "Conv3D"}), "Conv3D is not allowed"),
    (lambda cfg: layers(cfg).insert(1, {**layers(cfg)[1], "module": "evil", "registered_name": "evil>Layer"}),
     "layer class evil.Conv2D is not allowed"),
    (lambda cfg: layers(cfg)[-1]["config"].update(activation={"module": "builtins", "class_name": "function",
                                                              "config": "eval", "registered_name": "function"}),
     "activation .* is not allowed"),
    (lambda cfg: layers(cfg)[-1]["config"].update(function="os.system"), r"config keys \['function'\] are not allowed"),
    (lambda cfg: layers(cfg)[-1]["config"].update(kernel_regularizer={"module": "keras.regularizers", "class_name": "L2",
                                                                      "config": {"l2": 0.1}}),
     "kernel_regularizer must be null"),
    (lambda cfg: layers(cfg)[-1]["config"].update(kernel_initializer={"module": "keras.initializers",
                                                                      "class_name": "Custom", "config": {}}),
     "class keras.initializers.Custom is not allowed"),
    (lambda cfg: cfg["compile_config"].update(loss={"module": "builtins", "class_name": "function", "config": "exec"}),
     "loss .* is not allowed"),
    (lambda cfg: cfg.update(class_name="Functional"), "model class keras.Functional is not allowed"),
    (lambda cfg: cfg.update(registered_name="Custom>Model"), "registered_name must be null"),
    (lambda cfg: cfg.update(__class_name__="x"), "config keys"),
    (lambda cfg: layers(cfg).insert(1, {"module": "evil.module", "class_name": "ByteEmbeddingLayer",
                                        "registered_name": "evil>ByteEmbeddingLayer", "config": {"dim": 8}}),
     "layer class evil.module.ByteEmbeddingLayer is not allowed"),
    (lambda cfg: layers(cfg).insert(1, {"module": "pcapvision.classify.model", "class_name": "ByteEmbeddingLayer",
                                        "registered_name": "evil>Layer", "config": {"dim": 8}}),
     r"registered_name must be \"pcapvision>ByteEmbeddingLayer\""),
], ids=["unknown-layer", "custom-module", "function-activation", "extra-key", "regulariser", "custom-initializer",
        "function-loss", "functional-model", "registered-model", "dunder-key", "foreign-module",
        "foreign-registration"])
def test_anything_outside_the_allowlist_is_refused(model_dir, tmp_path, keras_untouched, edit, match):
    _refused(crafted_copy(model_dir, tmp_path / "crafted", config=edit), match)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"extra": {"payload/saved_model.pb": b"x"}}, r"unexpected entries \['payload/saved_model.pb'\]"),
    ({"extra": {"assets/x": b"x"}}, r"unexpected entries \['assets/x'\]"),
    ({"drop": ("pcapvision.json",)}, r"missing entries \['pcapvision.json'\]"),
    ({"prefix": b"\x89HDF\r\n\x1a\n" + bytes(504)}, "zip starting at byte 0"),
    ({"suffix": b"\x89HDF\r\n\x1a\n" + bytes(504)}, "data after the end of the archive"),
], ids=["saved-model-inside", "assets", "no-record", "hdf5-prefix-polyglot", "trailing-polyglot"])
def test_archive_structure_is_checked(model_dir, tmp_path, keras_untouched, kwargs, match):
    _refused(crafted_copy(model_dir, tmp_path / "crafted", **kwargs), match)


def test_duplicate_entries_and_a_non_hdf5_weights_file_are_refused(model_dir, tmp_path, keras_untouched):
    crafted = crafted_copy(model_dir, tmp_path / "dup")
    with zipfile.ZipFile(crafted / "model.keras", "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("config.json", b"{}")
    rehash(crafted)
    _refused(crafted, "duplicate entries")
    crafted = crafted_copy(model_dir, tmp_path / "weights", extra={"model.weights.h5": b"not hdf5"})
    _refused(crafted, "model.weights.h5 is not an HDF5 file")


def test_an_h5_model_file_is_refused_by_the_metadata_schema(model_dir, tmp_path, keras_untouched):
    import shutil

    crafted = tmp_path / "h5"
    shutil.copytree(model_dir, crafted)
    build_cnn((28, 28, 1), 2).save(crafted / "model.h5")
    rehash(crafted, model_file="model.h5")
    _refused(crafted, "model_file must be a file name ending in .keras")


@pytest.mark.parametrize("model_file", ["../../etc/passwd.keras", "/etc/passwd.keras", "sub/model.keras", ".hidden.keras"])
def test_model_file_stays_inside_the_model_directory(model_dir, tmp_path, keras_untouched, model_file):
    import shutil

    crafted = tmp_path / "m"
    shutil.copytree(model_dir, crafted)
    meta = json.loads((crafted / "metadata.json").read_text())
    meta["model_file"] = model_file
    (crafted / "metadata.json").write_text(json.dumps(meta))
    _refused(crafted, "model_file must be a file name ending in .keras inside the model directory")


def test_a_symlinked_model_file_is_refused(model_dir, tmp_path, keras_untouched):
    import shutil

    crafted = tmp_path / "link"
    shutil.copytree(model_dir, crafted)
    outside = tmp_path / "outside.keras"
    os.replace(crafted / "model.keras", outside)
    (crafted / "model.keras").symlink_to(outside)
    _refused(crafted, "outside the model directory")
    inside = crafted / "real.keras"
    os.replace(outside, inside)
    (crafted / "model.keras").unlink()
    (crafted / "model.keras").symlink_to("real.keras")
    _refused(crafted, "symbolic link")


def test_swapped_class_names_in_metadata_are_refused(model_dir, tmp_path, keras_untouched):
    import shutil

    crafted = tmp_path / "swap"
    shutil.copytree(model_dir, crafted)
    rehash(crafted, class_names=["normal", "malicious"])  # would invert every verdict
    _refused(crafted, r"class_names \[\"normal\", \"malicious\"\] differs from the one stored in the hashed model archive")


def test_loaded_network_must_match_the_recorded_shape_and_classes(tmp_path):
    out = tmp_path / "wide"
    save_model(build_mlp((32, 32, 1), 2), out, make_metadata("classify", {}, class_names=["a", "b"]))
    crafted = crafted_copy(out, tmp_path / "shape", record=lambda rec: rec.update(input_shape=[28, 28, 1]))
    rehash(crafted, input_shape=[28, 28, 1])
    _refused(crafted, r"takes inputs of shape \[32, 32, 1\], not \[28, 28, 1\]")
    crafted = crafted_copy(out, tmp_path / "classes", record=lambda rec: rec.update(class_names=["a", "b", "c"]))
    rehash(crafted, class_names=["a", "b", "c"])
    _refused(crafted, "model has 2 outputs but metadata lists 3 classes")


def test_metadata_schema_lists_every_problem_on_one_line(model_dir, tmp_path, keras_untouched):
    import shutil

    crafted = tmp_path / "schema"
    shutil.copytree(model_dir, crafted)
    meta = json.loads((crafted / "metadata.json").read_text())
    meta.update(class_names="ab", params={"threshold": "0.5"}, input_shape=[28, -1, 1], model_sha256="XYZ",
                dataset={"name": "mnist"})
    (crafted / "metadata.json").write_text(json.dumps(meta))
    message = _refused(crafted, "invalid metadata")
    for fragment in ("class_names must be a list", "params.threshold must be a number in [0, 1]",
                     "input_shape must be a list of three positive ints", "model_sha256 must be 64 lowercase hex",
                     "dataset (MNIST) must hold source, seed and data_sha256"):
        assert fragment in message
    (crafted / "metadata.json").write_text(json.dumps({**meta, "params": {"threshold": 0.5}}).replace('"XYZ"', "NaN"))
    _refused(crafted, "corrupt metadata")


def test_cli_reports_a_crafted_model_in_one_line_without_traceback(model_dir, tmp_path, capsys, keras_untouched):
    from pcapvision.cli import main

    crafted = crafted_copy(model_dir, tmp_path / "crafted",
                           config=lambda cfg: layers(cfg).insert(1, lambda_layer(tfsm_reference("payload"))))
    code = main(["evaluate", str(crafted), "mnist", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Lambda is not allowed" in err and "Traceback" not in err


def test_archive_entries_are_exactly_the_expected_ones(model_dir):
    assert sorted(read_archive(model_dir)) == ["config.json", "metadata.json", "model.weights.h5", "pcapvision.json"]
    assert write_archive({"a": b"1"}).startswith(b"PK\x03\x04")
