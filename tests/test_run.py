"""The main job end to end on a slice of the bundled sample, and stage reuse on a re-run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pcapvision.run import format_run, run_pipeline

SAMPLE = Path(__file__).resolve().parent.parent / "sample_pcaps"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    """Four hosts of the bundled sample (two per class) with their label rules."""
    if not (SAMPLE / "labels.csv").is_file():
        pytest.fail("sample_pcaps/ with labels.csv is part of the repository")
    names = ["normal-host00.pcap", "normal-host01.pcap", "infected-host00.pcap", "infected-host01.pcap",
             "normal-host02.pcap", "infected-host02.pcap"]
    out = tmp_path_factory.mktemp("sample")
    for name in names:
        shutil.copy(SAMPLE / name, out / name)
    with open(SAMPLE / "labels.csv", newline="") as src, open(out / "labels.csv", "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["file"] in names)
    return out


def test_run_end_to_end_then_reuse(small_sample, tmp_path):
    out = tmp_path / "out"
    record = run_pipeline([small_sample], out, epochs=2, suite="none", seed=0, quiet=True)
    assert record["labels"] == str(small_sample / "labels.csv")
    assert record["stages"]["ingest"]["files_ok"] == 6
    for path in ("flows", "images.parquet", "model/model.keras", "model/metadata.json",
                 "model/report/report.html", "preview.png", "run.json"):
        assert (out / path).exists(), path
    accuracy = record["stages"]["train"]["test"]["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert json.loads((out / "run.json").read_text())["stages"]["train"]["reused"] is False
    assert "test accuracy" in format_run(record)

    again = run_pipeline([small_sample], out, epochs=2, suite="none", seed=0, quiet=True)
    assert again["stages"]["ingest"]["files_skipped_already_ingested"] == 6
    assert again["stages"]["image"]["reused"] and again["stages"]["train"]["reused"]

    changed = run_pipeline([small_sample], out, epochs=3, suite="none", seed=0, quiet=True)
    assert changed["stages"]["image"]["reused"] and not changed["stages"]["train"]["reused"]


def test_run_json_holds_the_robustness_headline_figures(small_sample, tmp_path, monkeypatch):
    import pcapvision.robustness

    calls = []

    def fake_suite(model_dir, data, output_dir, suite, **kw):
        calls.append(kw)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "robustness.json").write_text("{}")
        return {"summary": [{"measure": "clean accuracy", "value": 0.9},
                            {"measure": "pgd_linf eps 0.1 malicious->normal evasion", "value": 0.25}]}

    monkeypatch.setattr(pcapvision.robustness, "run_suite", fake_suite)
    out = tmp_path / "out"
    record = run_pipeline([small_sample], out, epochs=1, suite="quick", seed=0, quiet=True, positive_class="malicious")
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["stages"]["robustness"]["headline"][1]["value"] == 0.25
    assert "malicious->normal evasion: 0.2500" in format_run(record)
    again = run_pipeline([small_sample], out, epochs=1, suite="quick", seed=0, quiet=True, positive_class="malicious")
    assert again["stages"]["robustness"]["reused"] and again["stages"]["robustness"]["headline"] and len(calls) == 1
