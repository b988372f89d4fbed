"""`pcapvision compare`: one shared group split, every kind of row, a verdict chosen on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pcapvision.cli import main
from pcapvision.compare.leaderboard import verdict
from pcapvision.compare.statistics import FEATURES, flow_statistics
from pcapvision.errors import ParameterError

SAMPLE = Path(__file__).resolve().parents[2] / "sample_pcaps"


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    from pcapvision.ingest import Labeler, ingest

    captures = sorted(SAMPLE.glob("normal-host0[0-3].pcap")) + sorted(SAMPLE.glob("infected-host0[0-3].pcap"))
    out = tmp_path_factory.mktemp("compare") / "flows"
    ingest(captures, out, labeler=Labeler.from_rules_csv(SAMPLE / "labels.csv"), quiet=True)
    return out


def test_compare_cli_writes_a_leaderboard_over_one_split(flows, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", str(flows), "-o", str(out), "--reprs", "packets", "flowpic", "--archs", "cnn",
                 "--seeds", "2", "--epochs", "1", "--quiet"])
    assert code == 0
    assert "macro-F1" in capsys.readouterr().out
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"model", "kind", "macro_f1_mean", "macro_f1_std", "positive_f1_mean", "positive_fpr_mean", "roc_auc_mean",
            "train_seconds_mean", "inference_images_per_s_mean"} <= set(board.columns)
    assert set(board["kind"]) == {"model", "baseline", "reference"}
    assert set(board.loc[board["kind"] == "model", "model"]) == {"cnn on packets", "cnn on flowpic"}
    assert (board["seeds"] == 2).all() and board["macro_f1_mean"].between(0, 1).all()
    import json

    record = json.loads((out / "compare.json").read_text())
    groups = record["split"]["groups"]
    assert not set(groups["test"]) & (set(groups["train"]) | set(groups["validation"]))
    assert not set(groups["train"]) & set(groups["validation"])
    assert {run["seed"] for run in record["runs"]} == {0, 1}
    html = (out / "leaderboard.html").read_text()
    assert record["verdict"]["text"] in html and 'style="font-weight:bold"' in html


def test_verdict_chooses_on_validation_not_test():
    table = pd.DataFrame([
        {"model": "a", "kind": "model", "macro_f1_mean": 0.95, "validation_macro_f1_mean": 0.70},
        {"model": "b", "kind": "model", "macro_f1_mean": 0.80, "validation_macro_f1_mean": 0.90},
        {"model": "z", "kind": "baseline", "macro_f1_mean": 0.76, "validation_macro_f1_mean": 0.60},
        {"model": "y", "kind": "baseline", "macro_f1_mean": 0.90, "validation_macro_f1_mean": 0.50},
    ])
    v = verdict(table)
    assert v["best_model"] == "b" and v["best_baseline"] == "z"
    assert v["gap_points"] == pytest.approx(4.0) and v["model_beats_baselines"]
    assert v["text"].startswith("The best model (b) beats the best baseline (z) by 4.0 macro-F1 points")
    table.loc[1, "macro_f1_mean"] = 0.77
    assert verdict(table)["text"].startswith("No model beats the baselines by 3 points")


def test_flow_statistics_match_a_per_flow_reference(flows):
    from pcapvision.io import parquet_files
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_files(flows)[0])
    feats = flow_statistics(table)
    assert feats.shape == (table.num_rows, len(FEATURES))
    for i in range(0, table.num_rows, 17):
        row = table.slice(i, 1).to_pylist()[0]
        times = np.asarray(row["packet_time_ms"], float)
        iat = np.diff(times) if len(times) > 1 else np.zeros(0)
        expected = [row["src2dst_packets"], row["dst2src_packets"], row["src2dst_bytes"], row["dst2src_bytes"],
                    row["src2dst_payload_bytes"], row["dst2src_payload_bytes"], row["duration_ms"],
                    np.mean(row["packet_ip_bytes"]), np.std(row["packet_ip_bytes"]),
                    np.mean(row["packet_payload_bytes"]), np.std(row["packet_payload_bytes"]),
                    iat.mean() if iat.size else 0.0, iat.std() if iat.size else 0.0, np.mean(row["packet_direction"])]
        np.testing.assert_allclose(feats[i], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reprs": ["pixels"]}, "The 'reprs' parameter must be one of"),
    ({"archs": ["mlp"]}, "The 'archs' parameter must be one of"),
    ({"seeds": 0}, "The 'seeds' parameter must be"),
    ({"reprs": ["packets", "packets"]}, "must not repeat an entry"),
])
def test_bad_parameters_are_named(kwargs, message, tmp_path):
    from pcapvision.compare import compare

    with pytest.raises(ParameterError, match=message):
        compare(tmp_path / "missing", tmp_path / "out", **kwargs)


def test_an_images_table_is_compared_on_its_own_representation_without_the_reference(tmp_path):
    from pcapvision.compare.grid import check_compare_params, load_compare_data, make_split
    from pcapvision.imaging import import_images

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    y = np.array(["normal", "malicious"] * 30)
    groups = np.array([f"host{i % 10}" for i in range(60)])
    np.savez(tmp_path / "d.npz", x=x, y=y, groups=groups)
    import_images(tmp_path / "d.npz", tmp_path / "d.parquet")
    params = check_compare_params(["packets"], ["cnn"], 1, 1, "label", "capture", 0)
    data, info = load_compare_data(tmp_path / "d.parquet", params)
    assert params["reprs"] == ["imported"] and info["input_kind"] == "images" and data.features is None
    assert any("reference needs the flows table" in note for note in data.notes)
    split = make_split(data, 0)
    assert split["n_train"] + split["n_validation"] + split["n_test"] == 60
    assert not set(split["groups"]["test"]) & set(split["groups"]["train"])


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "flows.parquet").write_text("not parquet")
    assert main(["compare", str(tmp_path / "flows.parquet"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flows.parquet: not a readable Parquet file" in err
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    assert main(["compare", str(tmp_path / "other.parquet"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    assert "missing column(s) flow_id, label" in capsys.readouterr().err


def test_the_positive_class_is_asked_for_never_guessed(tmp_path, capsys):
    from pcapvision.compare import compare
    from pcapvision.imaging import import_images

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    y = np.array(["benign", "benign", "attack"] * 20)  # 'benign' is the majority
    groups = np.array([f"host{i % 10}" for i in range(60)])
    np.savez(tmp_path / "d.npz", x=x, y=y, groups=groups)
    import_images(tmp_path / "d.npz", tmp_path / "d.parquet")
    with pytest.raises(SystemExit) as usage:
        main(["compare", str(tmp_path / "d.parquet"), "-o", str(tmp_path / "no"), "--quiet"])
    assert usage.value.code == 2
    assert "--positive-class" in capsys.readouterr().err
    record = compare(tmp_path / "d.parquet", tmp_path / "out", archs=["cnn"], seeds=1, epochs=1,
                     positive_class="attack", quiet=True)
    assert record["params"]["positive_class"] == "attack"
    majority = next(r for r in record["runs"] if r["model"].startswith("majority class"))
    # Always 'benign': the F1 of the positive class 'attack' is 0 (it would be > 0 for 'benign').
    assert majority["test"]["positive_f1"] == 0.0
