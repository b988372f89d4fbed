"""`pcapvision image`: options, outputs, exit codes; and the preview PNG."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from pcapvision.cli import main
from pcapvision.imaging import load_images, preview_grid, render_flows, summary_path
from pcapvision.io import write_parquet_atomic
from tests.imaging.helpers import make_flow, make_flows_table


@pytest.fixture
def flows_path(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for i in range(24):
        label, family = (("malicious", "c2-beacon") if i % 3 == 0 else ("normal", "web-browsing"))
        rows.append(make_flow(i, payload=rng.integers(0, 256, int(rng.integers(20, 900)), dtype=np.uint8).tobytes(),
                              label=label, family=family))
    rows.append(make_flow(99, payload=b""))
    path = tmp_path / "flows.parquet"
    write_parquet_atomic(make_flows_table(rows), path, {"stage": "ingest", "params": {}})
    return path


def test_image_command_writes_table_summary_and_preview(flows_path, tmp_path, capsys):
    out, png = tmp_path / "images.parquet", tmp_path / "grid.png"
    rc = main(["image", str(flows_path), "-o", str(out), "--repr", "byte-distribution", "--param", "max_bytes=300",
               "--preview", str(png), "--preview-per-class", "4", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rows in: 25, rendered: 24, out: 24" in printed and "no payload: 1" in printed
    x, y, meta = load_images(out)
    assert meta.params == {"column": "payload", "max_bytes": 300} and len(x) == 24
    assert json.loads(summary_path(out).read_text())["class_counts"] == {"malicious": 8, "normal": 16}
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 150 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # something is drawn


def test_image_command_options(flows_path, tmp_path, capsys):
    out = tmp_path / "images.parquet"
    assert main(["image", str(flows_path), "-o", str(out), "--repr", "flowpic", "--no-dedup", "--group-by", "server",
                 "--mask-tls-sni", "--param", "time_axis=linear", "--quiet"]) == 0
    _, _, meta = load_images(out)
    assert meta.schema["params"] == {"representation": "flowpic", "representation_params": meta.params,
                                     "dedup": False, "mask_tls_sni": True, "group_by": "server"}
    assert meta.params["time_axis"] == "linear" and set(meta.columns["split_group"]) == {"10.0.0.2"}


def test_image_command_errors(flows_path, tmp_path, capsys):
    out = str(tmp_path / "images.parquet")
    with pytest.raises(SystemExit) as exit_info:
        main(["image", str(flows_path), "-o", out, "--param", "max_bytes=10"])
    assert exit_info.value.code == 2 and "Unknown parameter 'max_bytes'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["image", str(flows_path), "-o", out, "--repr", "flowpic", "--param", "max_packets=-1"])
    assert exit_info.value.code == 2
    assert main(["image", str(tmp_path / "absent.parquet"), "-o", out]) == 1
    assert "absent.parquet" in capsys.readouterr().err


def test_help_documents_every_option_and_parameter(capsys):
    with pytest.raises(SystemExit):
        main(["image", "--help"])
    text = capsys.readouterr().out
    for option in ("--repr", "--param", "--no-dedup", "--mask-tls-sni", "--group-by", "--preview",
                   "--preview-per-class", "max_bytes (default 784)", "time_window_ms (default 10000.0)",
                   "(default: payload)", "(default: capture)"):
        assert option in text


def test_preview_grid_from_table(tmp_path):
    rows = [make_flow(i, payload=bytes([i]) * (50 + i), label=["a", "b", "c"][i % 3], family=None) for i in range(1, 13)]
    table, _ = render_flows(make_flows_table(rows), "payload")
    path = preview_grid(table, tmp_path / "p.png", per_class=3, seed=1)
    first = matplotlib.image.imread(path)
    preview_grid(table, tmp_path / "q.png", per_class=3, seed=1)
    assert np.array_equal(first, matplotlib.image.imread(tmp_path / "q.png"))  # seeded
