"""'pcapvision retrain' on bad input: one JSON line saying 'failed', a one-line error, exit 1, nothing published."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pcapvision.cli import main
from pcapvision.io import write_parquet_atomic


def _run(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["retrain", "--quiet", *args])
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, json.loads(lines[0]), out.err


def test_a_data_directory_without_labels_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "caps").mkdir()
    code, line, err = _run(capsys, "--data", str(tmp_path / "caps"), "--registry", str(tmp_path / "reg"))
    assert (code, line["status"], line["exit_code"]) == (1, "failed", 1)
    assert "no labels.csv at the top of the data directory" in line["error"]
    assert err.count("\n") == 1 and "labels.csv" in err
    assert not (tmp_path / "reg" / "versions").exists()
    # the failed run is recorded
    records = list((tmp_path / "reg" / "runs").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "failed"


def test_an_images_table_too_small_for_a_holdout_fails_before_training(tmp_path, capsys):
    n = 6
    table = pa.table({
        "flow_id": [f"f{i}" for i in range(n)], "label": ["normal", "normal", "normal", "malicious", "malicious", "malicious"],
        "family": [None] * n, "split_group": ["g1", "g1", "g1", "g2", "g2", "g2"],
        "image_sha256": [f"{i:064x}" for i in range(n)], "payload_length": [10] * n, "source_file": ["x"] * n,
        "image": pa.array([np.full(784, i, np.uint8).tobytes() for i in range(n)], pa.binary(784)),
    })
    images = write_parquet_atomic(table, tmp_path / "images.parquet", {"stage": "image", "representation": "payload"})
    code, line, _ = _run(capsys, "--images", str(images), "--registry", str(tmp_path / "reg"))
    assert (code, line["status"]) == (1, "failed")
    assert "no class brought two or more split groups" in line["error"]
    assert not list((tmp_path / "reg" / "versions").glob("*"))


def test_a_bad_config_value_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "retrain.toml"
    config.write_text("[gates]\nmax_fpr_rise = 2\n")
    try:
        main(["retrain", "--data", str(tmp_path), "--registry", str(tmp_path / "reg"), "--config", str(config)])
    except SystemExit as exc:
        assert exc.code == 2
    out = capsys.readouterr()
    assert json.loads(out.out.strip())["exit_code"] == 2
    assert "The 'max_fpr_rise' parameter must be a number in [0, 1]" in out.err
