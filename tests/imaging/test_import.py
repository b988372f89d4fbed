"""`pcapvision image import`: IDX (gzip or not), npz and PNG folders become valid images tables."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pcapvision.cli import main
from pcapvision.errors import DataContractError, InputNotFoundError
from pcapvision.imaging import import_images, load_images


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sample_images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 3).astype(np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_with_labels_found_beside(tmp_path, gz, caplog):
    x, y = sample_images()
    x[5] = x[1]  # a duplicate image with the same label: removed
    y[5] = y[1]
    x[7], y[7], y[8] = x[2], 0, 1
    x[8] = x[2]  # image 2 seen with three labels: dropped altogether
    suffix = ".gz" if gz else ""
    write = (lambda p, b: p.write_bytes(gzip.compress(b))) if gz else (lambda p, b: p.write_bytes(b))
    write(tmp_path / f"t10k-images-idx3-ubyte{suffix}", idx_bytes(x))
    write(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", idx_bytes(y))
    with caplog.at_level(logging.WARNING):
        summary = import_images(tmp_path / f"t10k-images-idx3-ubyte{suffix}", tmp_path / "imgs.parquet")
    assert "only a random split is possible" in caplog.text
    assert summary.rows_in == 12 and summary.duplicates_removed == 1 and summary.conflicting_rows_dropped == 3
    images, labels, meta = load_images(tmp_path / "imgs.parquet")
    keep = [0, 1, 3, 4, 6, 9, 10, 11]
    assert np.array_equal(np.rint(images[..., 0] * 255).astype(np.uint8), x[keep])
    assert labels.tolist() == [str(v) for v in y[keep]]
    assert meta.representation == "imported" and meta.params == {"format": "idx"}
    assert meta.columns["split_group"].nunique() == len(keep)  # one group per image


def test_idx_labels_option_and_missing_labels(tmp_path):
    x, y = sample_images(6)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(x))
    with pytest.raises(InputNotFoundError, match="labels file train-labels.idx1-ubyte is not beside it"):
        import_images(tmp_path / "train-images.idx3-ubyte", tmp_path / "out.parquet")
    (tmp_path / "elsewhere.idx1").write_bytes(idx_bytes(y))
    summary = import_images(tmp_path / "train-images.idx3-ubyte", tmp_path / "out.parquet",
                            labels=tmp_path / "elsewhere.idx1")
    assert summary.rows_out == 6


def test_npz_with_groups_and_float_pixels(tmp_path, caplog):
    x, _ = sample_images(10)
    y = np.array(["web", "c2"] * 5)
    groups = np.array(["hostA", "hostA", "hostB", "hostB", "hostC"] * 2)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32)[..., None] / 255.0, y=y, groups=groups)
    with caplog.at_level(logging.WARNING):
        import_images(tmp_path / "d.npz", tmp_path / "d.parquet")
    assert "random split" not in caplog.text
    images, labels, meta = load_images(tmp_path / "d.parquet")
    assert np.array_equal(np.rint(images[..., 0] * 255).astype(np.uint8), x)
    assert labels.tolist() == y.tolist() and meta.columns["split_group"].tolist() == groups.tolist()


def test_npz_without_y_names_what_is_missing(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataContractError, match="lacks y"):
        import_images(tmp_path / "bad.npz", tmp_path / "o.parquet")
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 32, 32), np.uint8), y=[0, 1])
    with pytest.raises(DataContractError, match="28x28"):
        import_images(tmp_path / "shape.npz", tmp_path / "o.parquet")


def test_png_folders_via_the_cli(tmp_path, capsys):
    from PIL import Image

    x, _ = sample_images(4)
    for i, cls in enumerate(["benign", "benign", "malware", "malware"]):
        (tmp_path / "pngs" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(tmp_path / "pngs" / cls / f"{i}.png")
    assert main(["image", "import", str(tmp_path / "pngs"), "-o", str(tmp_path / "p.parquet"), "--quiet"]) == 0
    images, labels, _ = load_images(tmp_path / "p.parquet")
    assert labels.tolist() == ["benign", "benign", "malware", "malware"]
    assert np.array_equal(np.rint(images[..., 0] * 255).astype(np.uint8), x)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "pngs" / "benign" / "small.png")
    assert main(["image", "import", str(tmp_path / "pngs"), "-o", str(tmp_path / "q.parquet"), "--quiet"]) == 1
    assert "small.png: image is 10x10, expected 28x28" in capsys.readouterr().err


def test_a_table_without_metadata_says_how_to_make_one(tmp_path):
    pq.write_table(pa.table({"image": pa.array([b"\0" * 784], pa.binary(784)), "label": ["a"]}), tmp_path / "raw.parquet")
    with pytest.raises(DataContractError, match="an images table needs schema metadata: make one with "
                                                 "`pcapvision image` or `pcapvision image import`"):
        load_images(tmp_path / "raw.parquet")
