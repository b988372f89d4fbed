"""Atomic writes and Parquet metadata helpers."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pcapvision.errors import DataContractError, InputNotFoundError
from pcapvision.io import (
    atomic_path,
    make_metadata,
    parquet_files,
    read_parquet_metadata,
    sha256_file,
    write_json_atomic,
    write_parquet_atomic,
)


def test_atomic_path_leaves_old_file_untouched_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_on_success_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.keras"
    with atomic_path(target, keep_suffix=True) as tmp:
        assert tmp.suffix == ".keras" and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_parquet_metadata_round_trip(tmp_path):
    table = pa.table({"a": [1, 2, 3]})
    meta = make_metadata("test", {"n": 3})
    path = write_parquet_atomic(table, tmp_path / "t.parquet", meta)
    stored = read_parquet_metadata(path)
    assert stored["stage"] == "test" and stored["params"] == {"n": 3}
    assert "pyarrow" in stored["library_versions"]
    assert read_parquet_metadata(tmp_path) == stored  # a directory reads its first part


def test_parquet_files_ignores_hidden_parts_and_reports_missing(tmp_path):
    write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "d" / "p1.parquet")
    (tmp_path / "d" / ".p2.parquet.tmp").write_bytes(b"partial")
    (tmp_path / "d" / "_meta.parquet").write_bytes(b"not a part")
    assert [p.name for p in parquet_files(tmp_path / "d")] == ["p1.parquet"]
    with pytest.raises(InputNotFoundError, match="no such file"):
        parquet_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataContractError, match="no Parquet files"):
        parquet_files(tmp_path / "empty")


def test_json_handles_numpy_and_sha256(tmp_path):
    import numpy as np

    path = write_json_atomic(tmp_path / "m.json", {"x": np.float32(0.5), "v": np.arange(3)})
    assert path.read_text().count("0.5") == 1
    assert sha256_file(path) == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
