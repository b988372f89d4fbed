"""Bring your own images: IDX files, npz arrays and PNG folders -> a valid images table.

Image datasets made by other tools (the USTC-TFC2016 / DeepTraffic IDX files, npz arrays, folders
of PNGs per class) become images tables with the same dedup and conflict rules and the same
metadata as ``pcapvision image`` writes, so ``train``, ``evaluate``, ``robustness`` and ``compare``
take them as they are. The pixels' meaning is whatever the other tool drew: the table records the
representation as ``imported`` with the source format.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError, InputNotFoundError
from pcapvision.imaging.representations import IMAGE_PIXELS, IMAGE_SIDE
from pcapvision.imaging.table import STAGE, ImagingSummary, _assemble, _Part, _sha256_rows, summary_path
from pcapvision.io import make_metadata, sha256_file, write_json_atomic, write_parquet_atomic
from pcapvision.validation import check_choice

log = logging.getLogger(__name__)

REPRESENTATION = "imported"
FORMATS = ("auto", "idx", "npz", "png")
_PNG_SUFFIXES = {".png"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array of an unsigned-byte IDX file (gzip or not)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataContractError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataContractError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(dims)):
        raise DataContractError(f"{path}: IDX data holds {len(raw) - header} bytes, its header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def labels_file_beside(images_path: Path) -> Path:
    """``t10k-images-idx3-ubyte.gz`` -> ``t10k-labels-idx1-ubyte.gz`` (also ``.idx3`` -> ``.idx1`` names)."""
    name = re.sub(r"images([-._])idx3", r"labels\g<1>idx1", images_path.name)
    if name == images_path.name:
        raise DataContractError(f"{images_path}: cannot tell the labels file from this name (expected "
                                "'...images-idx3...'); give it with --labels")
    candidates = [images_path.with_name(name)]
    if name.endswith(".gz"):
        candidates.append(images_path.with_name(name[:-3]))
    else:
        candidates.append(images_path.with_name(name + ".gz"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputNotFoundError(f"{images_path}: its labels file {candidates[0].name} is not beside it; give it with --labels")


def _as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2 and x.shape[1] == IMAGE_PIXELS:
        x = x.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataContractError(f"{where}: images must be 28x28 (N, 28, 28), (N, 28, 28, 1) or (N, 784); got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and x.size and float(np.nanmin(x)) >= 0 and float(np.nanmax(x)) <= 1:
        return np.rint(x * 255.0).astype(np.uint8)  # float images in [0, 1], as Keras pipelines keep them
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise DataContractError(f"{where}: pixels must be uint8, integers in 0..255 or floats in [0, 1]; got {x.dtype}")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataContractError(f"{path}: .npz lacks {', '.join(missing)} (it holds {sorted(arrays)}; need x, y, optional groups)")
    groups = arrays.get("groups")
    return arrays["x"], arrays["y"], groups, [str(path)] * len(arrays["y"])


def _read_png_tree(root: Path) -> tuple[np.ndarray, np.ndarray, None, list[str]]:
    from PIL import Image

    images, labels, files = [], [], []
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataContractError(f"{root}: no class folders (expected ROOT/<class>/*.png)")
    for folder in classes:
        for f in sorted(p for p in folder.rglob("*") if p.suffix.lower() in _PNG_SUFFIXES):
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L"))
            except OSError as exc:
                raise DataContractError(f"{f}: not a readable PNG ({exc})") from None
            if arr.shape != (IMAGE_SIDE, IMAGE_SIDE):
                raise DataContractError(f"{f}: image is {arr.shape[1]}x{arr.shape[0]}, expected 28x28")
            images.append(arr)
            labels.append(folder.name)
            files.append(os.fspath(f))
    if not images:
        raise DataContractError(f"{root}: no PNG files under its class folders")
    return np.stack(images), np.asarray(labels), None, files


def _detect(src: Path) -> str:
    if src.is_dir():
        return "png"
    if src.suffix == ".npz":
        return "npz"
    if "idx" in src.name:
        return "idx"
    raise DataContractError(f"{src}: cannot tell its format (an IDX file, an .npz or a folder of class folders "
                            "of PNGs); give --format")


def import_images(
    src: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    format: str = "auto",
    dedup: bool = True,
) -> ImagingSummary:
    """Read ``src`` (IDX images file, ``.npz`` with ``x``/``y``/optional ``groups``, or a PNG folder tree) into
    an images table at ``output`` (plus ``<output>.summary.json``); return the summary.

    Split groups come from the npz ``groups`` array when present; otherwise every image is its own
    group, with a warning: only a random split is then possible (near-identical images of one
    capture may land on both sides).
    """
    src = Path(src)
    if not src.exists():
        raise InputNotFoundError(f"{src}: no such file or directory")
    fmt = _detect(src) if check_choice("format", format, FORMATS) == "auto" else format
    inputs: list[Path] = [src]
    if fmt == "idx":
        label_path = Path(labels) if labels is not None else labels_file_beside(src)
        inputs.append(label_path)
        x, y, groups = read_idx(src), read_idx(label_path), None
        if y.ndim != 1 or len(y) != len(x):
            raise DataContractError(f"{label_path}: {y.shape} labels for {len(x)} images in {src}")
        files = [os.fspath(src)] * len(y)
    elif fmt == "npz":
        x, y, groups, files = _read_npz(src)
    else:
        x, y, groups, files = _read_png_tree(src)
    images = _as_uint8_images(x, os.fspath(src)).reshape(-1, IMAGE_PIXELS)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(images):
        raise DataContractError(f"{src}: {len(images)} images but labels of shape {y.shape}")
    if groups is not None and (np.asarray(groups).ndim != 1 or len(groups) != len(images)):
        raise DataContractError(f"{src}: 'groups' has shape {np.asarray(groups).shape}, expected ({len(images)},)")
    n = len(images)
    source_sha = sha256_file(src) if src.is_file() else hashlib.sha256("".join(files).encode()).hexdigest()
    flow_ids = [hashlib.sha256(f"{source_sha}|{i}".encode()).hexdigest()[:16] for i in range(n)]
    if groups is None:
        log.warning("%s: no split groups given: every image is its own group, so only a random split is possible "
                    "(images of one capture or host may land on both sides); give npz 'groups' for a group split", src)
        group_values = flow_ids
    else:
        group_values = [str(g) for g in np.asarray(groups).tolist()]
    label_values = [str(v) for v in y.tolist()]
    columns = {
        "flow_id": pa.array(flow_ids, pa.string()), "label": pa.array(label_values, pa.string()),
        "family": pa.nulls(n, pa.string()), "split_group": pa.array(group_values, pa.string()),
        "image_sha256": pa.array(_sha256_rows(np.ascontiguousarray(images)), pa.string()),
        "payload_length": pa.nulls(n, pa.int64()), "source_file": pa.array(files, pa.string()),
    }
    summary = ImagingSummary(REPRESENTATION, {"format": fmt}, dedup=dedup, mask_tls_sni=False,
                             group_by="column" if groups is not None else "image")
    summary.rows_in = n
    table = _assemble([_Part(np.ascontiguousarray(images), columns)], summary)
    meta = make_metadata(
        STAGE, {"representation": REPRESENTATION, "representation_params": {"format": fmt}, "dedup": dedup,
                "mask_tls_sni": False, "group_by": summary.group_by},
        representation=REPRESENTATION, representation_params={"format": fmt},
        pixel_meaning=f"as drawn by the tool that made the {fmt} file(s); imported unchanged (28x28 uint8)",
        image_shape=[IMAGE_SIDE, IMAGE_SIDE],
        image_encoding="fixed_size_binary(784): 28x28 uint8 row-major; load_images divides by 255",
        summary=summary.to_dict(),
        input={"path": os.fspath(src), "files": [os.fspath(p) for p in inputs],
               "sha256": [sha256_file(p) for p in inputs if p.is_file()] or source_sha, "format": fmt},
    )
    write_parquet_atomic(table, output, meta)
    write_json_atomic(summary_path(output), summary.to_dict())
    log.info("imported %d of %d images from %s into %s", table.num_rows, n, src, output)
    return summary


__all__ = ["FORMATS", "import_images", "labels_file_beside", "read_idx"]
