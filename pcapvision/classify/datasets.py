"""Data for the classifier: MNIST (the proof of concept) and images tables (traffic), with splits.

Every loader returns float32 images of shape (N, 28, 28, 1) scaled to [0, 1] and records enough
in an ``info`` dict (source, format, content hash, split, seed) that the exact same test split can
be rebuilt later from a model's metadata (:func:`mnist_test_split`, :func:`split_indices`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pcapvision.errors import DataContractError, InputNotFoundError, ModelFormatError
from pcapvision.validation import check_int, check_number

log = logging.getLogger(__name__)

BUNDLED_MNIST = "mnist-sample.npz"
MNIST_TEST_FRACTION = 0.2
_IDX_PATTERNS = {
    "x_train": ("train-images*idx3*", "train-images.idx3*"),
    "y_train": ("train-labels*idx1*", "train-labels.idx1*"),
    "x_test": ("t10k-images*idx3*", "t10k-images.idx3*"),
    "y_test": ("t10k-labels*idx1*", "t10k-labels.idx1*"),
}


# --- MNIST -------------------------------------------------------------------------------------


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 1) -> float32 (N, H, W, 1) in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    return (arr.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)


def content_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over the shapes, dtypes and bytes of ``arrays``: identifies a data set by content."""
    digest = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        if a.dtype == object:
            a = np.asarray([str(v) for v in a.ravel()], dtype=np.str_)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def bundled_mnist_path() -> Path:
    """Path of the real-MNIST sample shipped in ``pcapvision/data`` (see docs/classify.md)."""
    return Path(str(resources.files("pcapvision") / "data" / BUNDLED_MNIST))


def _read_idx(path: Path) -> np.ndarray:
    from pcapvision.imaging import read_idx  # one IDX reader for MNIST files and image imports

    return read_idx(path)


def _find_idx(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for key, patterns in _IDX_PATTERNS.items():
        matches = sorted({m for pattern in patterns for m in directory.glob(pattern)})
        if not matches:
            raise DataContractError(f"{directory}: no IDX file matching {patterns[0]!r} (need the four MNIST IDX files)")
        found[key] = matches[0]
    return found


def _read_mnist_file(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """Arrays of an MNIST file and its format name ('keras-npz', 'idx' or 'xy-npz')."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or directory")
    if path.is_dir() or "idx" in path.name:
        directory = path if path.is_dir() else path.parent
        return {key: _read_idx(p) for key, p in _find_idx(directory).items()}, "idx"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: not a readable .npz file ({exc})") from exc
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        return {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")}, "keras-npz"
    if {"x", "y"} <= arrays.keys():
        return {"x": arrays["x"], "y": arrays["y"]}, "xy-npz"
    raise DataContractError(
        f"{path}: .npz holds {sorted(arrays)}; expected x_train/y_train/x_test/y_test (Keras mnist.npz) or x/y"
    )


def _check_mnist_arrays(path: Any, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim not in (3, 4) or x.shape[1:3] != (28, 28) or len(x) != len(y) or y.ndim != 1:
        raise DataContractError(f"{path}: expected images (N, 28, 28) and labels (N,), got {x.shape} and {y.shape}")


def _stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    keep, hold = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    return np.sort(keep), np.sort(hold)


def _load_keras_mnist() -> dict[str, np.ndarray]:
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _mnist_arrays(source: str, path: str | None) -> tuple[dict[str, np.ndarray], str]:
    if source == "keras":
        return _load_keras_mnist(), "keras-npz"
    if source == "bundled-sample":
        return _read_mnist_file(bundled_mnist_path())
    return _read_mnist_file(Path(path or ""))


@functools.cache
def _warn_bundled_sample(path: str) -> None:
    # Once per process: `pcapvision run` loads MNIST for training, evaluation and robustness.
    log.warning("using the real-MNIST SAMPLE bundled with pcapvision (%s), not full MNIST: accuracy on it is not "
                "comparable with full-MNIST results; pass --mnist-file for the full set", path)


def load_mnist(
    mnist_file: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    allow_download: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """MNIST as ``(x_train, y_train, x_test, y_test, info)``: float32 (N, 28, 28, 1) in [0, 1], int64 labels.

    Source, in order: ``mnist_file`` (Keras' ``mnist.npz``, a directory holding the four IDX files,
    gzipped or not, or an ``.npz`` with just ``x`` and ``y``); else ``keras.datasets.mnist.load_data()``
    (cached under ``~/.keras/datasets``) when ``allow_download``; else, or when that fails, the
    real-MNIST sample bundled in the package, with a warning. Files with their own train/test split
    keep it; ``x``/``y`` files are split 80/20, stratified, with ``seed``. ``info`` records the
    source, format, content hash and split so :func:`mnist_test_split` can rebuild the test set.
    """
    seed = check_int("seed", seed, min_value=0)
    if mnist_file is not None:
        source, path = "file", str(mnist_file)
        arrays, fmt = _read_mnist_file(Path(path))
    else:
        source, path = "bundled-sample", str(bundled_mnist_path())
        arrays = {}
        if allow_download:
            try:
                arrays, fmt, source, path = _load_keras_mnist(), "keras-npz", "keras", None
            except Exception as exc:  # offline: URLError, HTTP errors, SSL errors, a broken cache...
                log.warning("could not load MNIST with keras.datasets.mnist.load_data (%s)", " ".join(str(exc).split())[:200])
        if source == "bundled-sample":
            _warn_bundled_sample(path)
            arrays, fmt = _read_mnist_file(Path(path))
    info = _split_mnist_info(arrays, fmt, source, path, seed)
    x_train, y_train, x_test, y_test = _apply_mnist_split(arrays, info)
    log.info("MNIST from %s (%s): %d train, %d test images", path or "keras.datasets", fmt, len(y_train), len(y_test))
    return x_train, y_train, x_test, y_test, info


def _split_mnist_info(arrays: Mapping[str, np.ndarray], fmt: str, source: str, path: str | None, seed: int) -> dict[str, Any]:
    if fmt == "xy-npz":
        _check_mnist_arrays(path, arrays["x"], arrays["y"])
        data_sha = content_sha256(arrays["x"], arrays["y"])
        split = f"stratified {1 - MNIST_TEST_FRACTION:.0%}/{MNIST_TEST_FRACTION:.0%} (seed {seed})"
        n_test = int(round(len(arrays["y"]) * MNIST_TEST_FRACTION))
        n_train = len(arrays["y"]) - n_test
    else:
        _check_mnist_arrays(path, arrays["x_train"], arrays["y_train"])
        _check_mnist_arrays(path, arrays["x_test"], arrays["y_test"])
        data_sha = content_sha256(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
        split = "the file's own train/test split"
        n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    return {
        "name": "mnist",
        "source": source,
        "path": path,
        "format": fmt,
        "is_sample": source == "bundled-sample" or (n_train + n_test) < 70000,
        "data_sha256": data_sha,
        "split": split,
        "test_fraction": MNIST_TEST_FRACTION if fmt == "xy-npz" else None,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
    }


def _apply_mnist_split(arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]):
    if info["format"] == "xy-npz":
        y_all = arrays["y"].astype(np.int64)
        train_idx, test_idx = _stratified_holdout(y_all, float(info["test_fraction"]), int(info["seed"]))
        x_all = arrays["x"]
        return to_float_images(x_all[train_idx]), y_all[train_idx], to_float_images(x_all[test_idx]), y_all[test_idx]
    return (
        to_float_images(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        to_float_images(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
    )


def reload_mnist(info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` rebuilt from a :func:`load_mnist` ``info`` record.

    Raises :class:`DataContractError` when the source data changed since (content hash differs).
    """
    arrays, fmt = _mnist_arrays(str(info["source"]), info.get("path"))
    rebuilt = _split_mnist_info(arrays, fmt, str(info["source"]), info.get("path"), int(info["seed"]))
    if rebuilt["data_sha256"] != info["data_sha256"]:
        raise DataContractError(
            f"{info.get('path') or 'keras.datasets.mnist'}: MNIST content hash {rebuilt['data_sha256'][:12]} differs "
            f"from the one the model was trained with ({str(info['data_sha256'])[:12]})"
        )
    return _apply_mnist_split(arrays, rebuilt)


def mnist_test_split(metadata: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The exact MNIST test set a model was evaluated on, rebuilt from its ``metadata.json``.

    Raises :class:`ModelFormatError` when the model was not trained on MNIST, and
    :class:`DataContractError` when the source data changed since (content hash differs).
    """
    info = metadata.get("dataset") if isinstance(metadata, Mapping) else None
    if not isinstance(info, Mapping) or info.get("name") != "mnist":
        raise ModelFormatError("model metadata: the model was not trained on MNIST (no MNIST dataset record)")
    _, _, x_test, y_test = reload_mnist(info)
    return x_test, y_test


# --- images tables (traffic) -------------------------------------------------------------------


@dataclass
class ImagesDataset:
    """An images table loaded for training or evaluation, duplicates removed."""

    x: np.ndarray  # float32 (N, 28, 28, 1) in [0, 1]
    labels: np.ndarray  # str (N,), the target column's values
    flow_id: np.ndarray  # str (N,)
    split_group: np.ndarray  # str (N,)
    image_sha256: np.ndarray  # str (N,)
    payload_length: np.ndarray | None  # int (N,) or None when the table has no such column
    representation: str | None
    params: dict[str, Any]
    schema: dict[str, Any]
    path: str
    target: str
    data_sha256: str
    n_duplicates_dropped: int = 0
    n_conflicts_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImagesDataset:
        """The rows at ``index`` (a new dataset sharing the metadata)."""
        pl = None if self.payload_length is None else self.payload_length[index]
        return ImagesDataset(
            self.x[index], self.labels[index], self.flow_id[index], self.split_group[index],
            self.image_sha256[index], pl, self.representation, self.params, self.schema, self.path,
            self.target, self.data_sha256,
        )


def _column(columns: Any, name: str, path: Any, n: int) -> np.ndarray | None:
    if columns is None or name not in columns:
        return None
    values = np.asarray(columns[name])
    if len(values) != n:
        raise DataContractError(f"{path}: column {name!r} has {len(values)} rows, images have {n}")
    return values


def load_images_dataset(path: str | os.PathLike[str], target: str = "label") -> ImagesDataset:
    """Load an images table with :func:`pcapvision.imaging.load_images` and drop duplicate images.

    Duplicates (same ``image_sha256``) are removed again here, defensively, keeping the first;
    an image that appears with different labels is dropped altogether, since no split could keep
    it honest. Rows without a label are dropped with a warning.
    """
    from pcapvision.imaging import load_images

    x, y, meta = load_images(path, target=target)
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(y).astype(str)
    n = len(labels)
    columns = getattr(meta, "columns", None)
    flow_id = _column(columns, "flow_id", path, n)
    groups = _column(columns, "split_group", path, n)
    if flow_id is None or groups is None:
        raise DataContractError(f"{path}: images table lacks the flow_id/split_group columns")
    sha = _column(columns, "image_sha256", path, n)
    if sha is None:
        u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        sha = np.asarray([hashlib.sha256(img.tobytes()).hexdigest() for img in u8])
    payload_length = _column(columns, "payload_length", path, n)
    if payload_length is not None:
        lengths = pd.to_numeric(pd.Series(payload_length), errors="coerce")
        payload_length = None if lengths.isna().all() else lengths.fillna(0).to_numpy(np.int64)
    keep = np.asarray([lab not in ("", "None", "nan") for lab in labels], dtype=bool)
    if not keep.all():
        log.warning("%s: dropping %d rows without a %s", path, int((~keep).sum()), target)
    sha = sha.astype(str)
    dup_first, n_dup, n_conflict = _dedup_mask(sha, labels, keep)
    schema = dict(getattr(meta, "schema", {}) or {})
    data = ImagesDataset(
        x=x, labels=labels, flow_id=flow_id.astype(str), split_group=groups.astype(str), image_sha256=sha,
        payload_length=None if payload_length is None else payload_length.astype(np.int64),
        representation=getattr(meta, "representation", None), params=dict(getattr(meta, "params", {}) or {}),
        schema=schema, path=str(path), target=target, data_sha256="",
    ).subset(np.flatnonzero(dup_first))
    data.n_duplicates_dropped, data.n_conflicts_dropped = n_dup, n_conflict
    if n_dup or n_conflict:
        log.warning("%s: dropped %d duplicate images and %d images seen with conflicting labels", path, n_dup, n_conflict)
    if len(data) == 0:
        raise DataContractError(f"{path}: no labelled images left after removing duplicates")
    data.data_sha256 = content_sha256(data.image_sha256, data.labels)
    return data


def _dedup_mask(sha: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Mask keeping the first row of each image hash; hashes seen with several labels are dropped."""
    seen: dict[str, str] = {}
    conflicted: set[str] = set()
    for h, lab, k in zip(sha, labels, keep):
        if not k:
            continue
        if h in seen and seen[h] != lab:
            conflicted.add(h)
        seen.setdefault(h, lab)
    mask = np.zeros(len(sha), dtype=bool)
    taken: set[str] = set()
    n_dup = 0
    n_conflict = 0
    for i, (h, k) in enumerate(zip(sha, keep)):
        if not k:
            continue
        if h in conflicted:
            n_conflict += 1
        elif h in taken:
            n_dup += 1
        else:
            taken.add(h)
            mask[i] = True
    return mask, n_dup, n_conflict


def split_indices(
    y: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    class_names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Stratified, group-aware train/validation/test row indices (no group on two sides).

    ``class_names`` (index order) name the classes in messages.

    Uses :class:`sklearn.model_selection.StratifiedGroupKFold`: the first fold of
    ``round(1/test_fraction)`` folds is the test set, then the same on the rest gives validation.
    Fractions are of the whole data set and approximate (whole groups move together).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    seed = check_int("seed", seed, min_value=0)
    test_fraction = check_number("test_fraction", test_fraction, min_value=0, max_value=0.5, min_inclusive=False)
    validation_fraction = check_number("validation_fraction", validation_fraction, min_value=0, max_value=0.5, min_inclusive=False)
    y = np.asarray(y)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 3:
        raise DataContractError(
            f"only {n_groups} distinct split_group value(s): a group-aware train/validation/test split needs at least 3"
        )

    def holdout(index: np.ndarray, fraction: float, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
        n_splits = max(2, min(int(round(1 / fraction)), len(np.unique(groups[index]))))
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=rng_seed)
        import warnings

        with warnings.catch_warnings():
            # "The least populated class in y has only N members": expected on small tables.
            warnings.simplefilter("ignore", UserWarning)
            keep, hold = next(cv.split(np.zeros(len(index)), y[index], groups[index]))
        return index[keep], index[hold]

    everything = np.arange(len(y))
    rest, test = holdout(everything, test_fraction, seed)
    train, validation = holdout(rest, validation_fraction / (1 - test_fraction), seed + 1)
    split = {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}

    def named(classes: list[Any]) -> list[str]:
        return [str(class_names[int(c)]) if class_names is not None else str(c) for c in classes]

    missing = sorted(set(np.unique(y)) - set(np.unique(y[split["train"]])))
    if missing:
        raise DataContractError(f"classes {named(missing)} have no group that could go to the training split; add data")
    for name in ("validation", "test"):
        absent = sorted(set(np.unique(y)) - set(np.unique(y[split[name]])))
        if absent:
            log.warning("the %s split holds no example of class %s: only %d split groups; its figures "
                        "will not cover that class (add captures, or use --group-by server when imaging)",
                        name, named(absent), n_groups)
    return split


__all__ = [
    "BUNDLED_MNIST", "ImagesDataset", "bundled_mnist_path", "content_sha256", "load_images_dataset",
    "load_mnist", "mnist_test_split", "reload_mnist", "split_indices", "to_float_images",
]
