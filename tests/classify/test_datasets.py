from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest

from pcapvision.classify import datasets
from pcapvision.classify.datasets import load_mnist, mnist_test_split, split_indices
from pcapvision.errors import DataContractError, InputNotFoundError, ModelFormatError


def _digits(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def _write_idx(path, arr, compress):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """keras.datasets.mnist.load_data must never reach the network in tests."""
    def offline():
        raise OSError("network disabled in tests")
    monkeypatch.setattr(datasets, "_load_keras_mnist", offline)


def test_keras_npz_keeps_its_own_split_and_scales_to_unit_interval(tmp_path):
    xtr, ytr = _digits(50)
    xte, yte = _digits(20, seed=1)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    x_train, y_train, x_test, y_test, info = load_mnist(path)
    assert x_train.shape == (50, 28, 28, 1) and x_train.dtype == np.float32
    assert x_test.shape == (20, 28, 28, 1)
    np.testing.assert_allclose(x_train[..., 0] * 255, xtr, atol=1e-3)
    np.testing.assert_array_equal(y_test, yte)
    assert info["format"] == "keras-npz" and info["is_sample"]


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_gzip_or_not(tmp_path, compress):
    suffix = ".gz" if compress else ""
    xtr, ytr = _digits(30)
    xte, yte = _digits(10, seed=2)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", xtr, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", ytr, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", xte, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", yte, compress)
    x_train, y_train, x_test, y_test, info = load_mnist(tmp_path)
    assert info["format"] == "idx"
    np.testing.assert_array_equal(y_train, ytr)
    np.testing.assert_allclose(x_test[..., 0] * 255, xte, atol=1e-3)


def test_xy_npz_is_split_80_20_stratified_and_reproducibly(tmp_path):
    x, y = _digits(500)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    a = load_mnist(path, seed=3)
    b = load_mnist(path, seed=3)
    c = load_mnist(path, seed=4)
    assert len(a[1]) == 400 and len(a[3]) == 100
    assert np.bincount(a[3]).tolist() == [10] * 10  # stratified
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[3], c[3]) or not np.array_equal(a[2], c[2])
    # the same test split is rebuilt from the metadata a model stores
    x_test, y_test = mnist_test_split({"dataset": a[4]})
    np.testing.assert_array_equal(x_test, a[2])
    np.testing.assert_array_equal(y_test, a[3])


def test_changed_file_is_detected_when_rebuilding_the_test_split(tmp_path):
    x, y = _digits(100)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    info = load_mnist(path)[4]
    np.savez(path, x=255 - x, y=y)
    with pytest.raises(DataContractError, match="content hash"):
        mnist_test_split({"dataset": info})
    with pytest.raises(ModelFormatError, match="not trained on MNIST"):
        mnist_test_split({"dataset": {"name": "images"}})


def test_offline_without_a_file_falls_back_to_the_bundled_real_sample_with_a_warning(caplog):
    from pcapvision.classify import datasets

    datasets._warn_bundled_sample.cache_clear()
    with caplog.at_level(logging.WARNING, logger="pcapvision"):
        x_train, y_train, x_test, y_test, info = load_mnist(seed=0)
        load_mnist(seed=1)  # `pcapvision run` loads it three times: warned once
    assert info["source"] == "bundled-sample" and info["is_sample"]
    assert len(y_train) + len(y_test) == 10000
    assert sorted(np.unique(y_test).tolist()) == list(range(10))
    assert sum("SAMPLE" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("content", "error", "match"), [
    (None, InputNotFoundError, "no such file"),
    (b"not a zip", DataContractError, "not a readable .npz"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, error, match):
    path = tmp_path / "m.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match) as info:
        load_mnist(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npz_with_other_arrays_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((3, 28, 28)))
    with pytest.raises(DataContractError, match="expected x_train"):
        load_mnist(path)


def test_group_aware_split_never_puts_a_group_on_two_sides():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"cap{i}" for i in range(40)], 25)
    y = np.repeat(rng.integers(0, 3, 40), 25)  # each capture holds one class
    split = split_indices(y, groups, seed=0)
    sides = {name: set(groups[idx]) for name, idx in split.items()}
    assert not sides["train"] & sides["test"]
    assert not sides["train"] & sides["validation"]
    assert not sides["validation"] & sides["test"]
    assert sum(len(i) for i in split.values()) == len(y)
    assert 0.1 < len(split["test"]) / len(y) < 0.3
    for idx in split.values():
        assert set(y[idx]) == {0, 1, 2}  # stratified: every class on every side
    again = split_indices(y, groups, seed=0)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_split_needs_enough_groups():
    with pytest.raises(DataContractError, match="at least 3"):
        split_indices(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]))


def test_dedup_keeps_first_and_drops_conflicting_images():
    sha = np.array(["a", "b", "a", "c", "c", "d"])
    labels = np.array(["n", "m", "n", "n", "m", "m"])
    keep = np.ones(6, dtype=bool)
    mask, n_dup, n_conflict = datasets._dedup_mask(sha, labels, keep)
    assert mask.tolist() == [True, True, False, False, False, True]
    assert (n_dup, n_conflict) == (1, 2)
