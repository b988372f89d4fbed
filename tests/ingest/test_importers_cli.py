"""``pcapvision labels import`` and ``pcapvision ingest --labels FILE --labels-format FMT``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pcapvision.cli import main
from tests.ingest.importer_data import flow_name, write_capture
from tests.ingest.test_importers import CIC


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "Monday.csv").write_text(CIC)
    return {"capture": write_capture(tmp_path / "day.pcap"), "csv": tmp_path / "Monday.csv"}


def test_labels_import_writes_rules_and_report(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    assert run(["ingest", str(files["capture"]), "-o", str(tmp_path / "flows.parquet"), "--quiet"], capsys)[0] == 0
    code, out, err = run(["labels", "import", str(files["csv"]), "--format", "cicflowmeter", "-o",
                          str(tmp_path / "rules.csv"), "--flows", str(tmp_path / "flows.parquet"),
                          "--tz", "America/Halifax", "--quiet"], capsys)
    assert code == 0, err
    assert "labelled records that matched a flow: 4 of 6 (66.7%)" in out
    assert "flow labels from the rules: malicious 1, normal 1, unlabeled 3" in out
    report = json.loads((tmp_path / "rules.match.json").read_text())
    assert report["flows_table"] == str(tmp_path / "flows.parquet") and report["match"]["flows"]["conflict"] == 1


def test_ingest_imports_then_labels_and_reports(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    out_path = tmp_path / "out" / "flows.parquet"
    code, out, err = run(["ingest", str(files["capture"]), "-o", str(out_path), "--labels", str(files["csv"]),
                          "--labels-format", "cicflowmeter", "--tz", "America/Halifax", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "flows.rules.csv").is_file() and (tmp_path / "out" / "flows.rules.match.json").is_file()
    rows = pq.read_table(out_path, columns=["src_ip", "src_port", "first_seen_ns", "label", "label_source"]).to_pylist()
    labels = {flow_name(r["src_ip"], r["src_port"], r["first_seen_ns"]): (r["label"], r["label_source"]) for r in rows}
    assert labels == {"F1": ("malicious", "Monday.csv:2"), "F2": ("normal", "Monday.csv:3"), "F3": (None, None),
                      "F4": (None, None), "F5": (None, None)}
    assert "conflict 1" in out


def test_bad_ground_truth_file_exit_codes(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, out, err = run(["labels", "import", str(bad), str(files["csv"]), "--format", "cicflowmeter", "-o",
                          str(tmp_path / "rules.csv"), "--quiet"], capsys)
    assert code == 1 and (tmp_path / "rules.csv").is_file()
    assert f"failed: {bad}:1: no 'Source IP' / 'Src IP' column" in out
    code, out, err = run(["labels", "import", str(bad), "--format", "cicflowmeter", "-o", str(tmp_path / "r2.csv")],
                         capsys)
    assert code == 1 and not (tmp_path / "r2.csv").exists()
    assert err.strip().splitlines()[-1].startswith(f"pcapvision labels: error: {bad}:1: no 'Source IP'")
    assert "Traceback" not in err


def test_import_options_without_import_are_usage_errors(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    code, _, err = run(["ingest", str(files["capture"]), "-o", str(tmp_path / "f.parquet"), "--tz", "UTC",
                        "--time-slack", "5"], capsys)
    assert code == 2 and "--time-slack: only used to import ground truth" in err
    code, _, err = run(["labels", "import", str(files["csv"]), "--format", "cicflowmeter", "-o",
                        str(tmp_path / "r.csv"), "--tz", "Mars/Base"], capsys)
    assert code == 2 and "The 'tz' parameter must be an IANA time zone" in err


def test_flows_option_must_be_a_flows_table(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    import pyarrow as pa

    pq.write_table(pa.table({"flow_id": ["a"], "image": [b"x"]}), tmp_path / "images.parquet")
    code, _, err = run(["labels", "import", str(files["csv"]), "--format", "cicflowmeter", "-o",
                        str(tmp_path / "r.csv"), "--flows", str(tmp_path / "images.parquet")], capsys)
    assert code == 1 and "images.parquet: not a pcapvision flows table (no column 'src_ip')" in err
    assert not (tmp_path / "r.csv").exists()
    assert "Traceback" not in err
