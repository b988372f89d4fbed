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

    # New label rules (same file, one more rule): the parts are re-ingested and every later
    # stage is redone, even where no flow's label changed.
    with open(small_sample / "labels.csv", "a", newline="") as rules:
        header = (small_sample / "labels.csv").read_text().splitlines()[0].split(",")
        csv.DictWriter(rules, fieldnames=header).writerow({**{c: "" for c in header}, "label": "never",
                                                           "src_ip": "192.0.2.255"})
    relabelled = run_pipeline([small_sample], out, epochs=3, suite="none", seed=0, quiet=True)
    assert relabelled["stages"]["ingest"]["files_reingested"] == 6
    assert not relabelled["stages"]["image"]["reused"] and not relabelled["stages"]["train"]["reused"]
