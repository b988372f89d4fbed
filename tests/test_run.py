"""The main job end to end on a slice of the bundled sample, and stage reuse on a re-run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pcapvision.errors import CaptureFormatError
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


def _run(sample: Path, out: Path, **kw):
    kw.setdefault("epochs", 2)
    return run_pipeline([sample], out, suite="none", seed=0, mnist=False, quiet=True, **kw)


@pytest.fixture(scope="module")
def first_run(small_sample, tmp_path_factory) -> tuple[Path, dict]:
    """One traffic-only run (2 epochs, no robustness); tests work on copies of its output."""
    out = tmp_path_factory.mktemp("first") / "out"
    return out, _run(small_sample, out)


@pytest.fixture
def run_copy(first_run, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    return out


def test_run_end_to_end_then_reuse(small_sample, first_run, run_copy):
    out, record = first_run
    assert record["labels"] == str(small_sample / "labels.csv")
    assert record["stages"]["ingest"]["files_ok"] == 6
    for path in ("flows", "images.parquet", "model/model.keras", "model/metadata.json",
                 "model/report/report.html", "preview.png", "run.json", "report.html"):
        assert (out / path).exists(), path
    accuracy = record["stages"]["train"]["test"]["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert json.loads((out / "run.json").read_text())["stages"]["train"]["reused"] is False
    assert "test accuracy" in format_run(record)
    from pcapvision.classify import read_metadata

    metadata = read_metadata(out / "model")  # the traffic default chosen by `pcapvision compare`
    assert (metadata["representation"], metadata["params"]["arch"]) == ("packets", "cnn1d")

    again = _run(small_sample, run_copy)
    assert again["stages"]["ingest"]["files_skipped_already_ingested"] == 6
    assert again["stages"]["image"]["reused"] and again["stages"]["train"]["reused"]

    changed = _run(small_sample, run_copy, epochs=3)
    assert changed["stages"]["image"]["reused"] and not changed["stages"]["train"]["reused"]


def test_reuse_follows_the_artifact_not_the_run_record(small_sample, run_copy):
    """A hand-made change in OUT is seen: the images table re-rendered as flowpic by hand is not
    'reused' for a packets run, and a model directory written by another (killed) training is
    not reused either, though run.json still describes the earlier artifacts."""
    from pcapvision.classify import read_metadata, train_images
    from pcapvision.imaging import image_flows

    out = run_copy
    image_flows(out / "flows", out / "images.parquet", "flowpic", quiet=True)
    again = _run(small_sample, out, epochs=2)
    assert again["stages"]["image"]["reused"] is False
    assert read_metadata(out / "model")["representation"] == "packets"  # the default, not the hand-made flowpic

    # A later run with epochs=1 got as far as writing the model, then was killed: run.json
    # still says epochs=2 finished.
    train_images(out / "images.parquet", out / "model", epochs=1, seed=0)
    third = _run(small_sample, out, epochs=2)
    assert third["stages"]["image"]["reused"] is True
    assert third["stages"]["train"]["reused"] is False
    assert read_metadata(out / "model")["params"]["epochs"] == 2


def test_each_stage_is_recorded_when_it_finishes_and_a_killed_stage_is_redone(small_sample, run_copy, monkeypatch):
    import pcapvision.classify as classify

    out = run_copy

    def killed(*args, **kwargs):
        # Killed after writing part of the model directory (the split manifest comes first).
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / "model" / "split_manifest.parquet").write_bytes(b"half")
        raise KeyboardInterrupt

    real_train = classify.train_images
    monkeypatch.setattr(classify, "train_images", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(small_sample, out, epochs=1)  # other parameters: the train stage runs, and is killed
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert "train" not in stages and {"ingest", "image"} <= set(stages)
    assert stages["image"]["reused"] is True and stages["image"]["artifact_sha256"]

    # Killed with the previous run's parameters too: the half-written directory is not reused.
    with pytest.raises(KeyboardInterrupt):
        _run(small_sample, out)
    monkeypatch.setattr(classify, "train_images", real_train)
    record = _run(small_sample, out)
    assert record["stages"]["image"]["reused"] is True
    assert record["stages"]["train"]["reused"] is False

    # The model file swapped under an intact metadata.json (a torn write) is not trusted.
    model_file = out / "model" / "model.keras"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    record = _run(small_sample, out)
    assert record["stages"]["train"]["reused"] is False


# The smallest robustness suite that still runs every study once.
TINY_SUITE = {"n_eval": 100, "n_attack": 50, "n_deepfool": 2, "fooling_steps": 5, "n_certify": 2, "certify_n": 50,
              "n_realizable": 1}


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory) -> Path:
    """600 digits of the bundled MNIST sample (an x/y npz, split 80/20 by load_mnist)."""
    import numpy as np

    from pcapvision.classify import load_mnist

    x_train, y_train, _, _, _ = load_mnist(None, seed=0, allow_download=False)
    path = tmp_path_factory.mktemp("mnist") / "mnist-600.npz"
    pick = np.random.default_rng(0).permutation(len(y_train))[:600]
    x = np.clip(np.rint(x_train[pick, :, :, 0] * 255), 0, 255).astype(np.uint8)
    np.savez_compressed(path, x=x, y=y_train[pick])
    return path


def test_default_run_trains_both_models_writes_one_report_then_reuses_everything(small_sample, small_mnist, tmp_path):
    from pcapvision.config import validate

    out = tmp_path / "out"
    config = validate({"train": {"epochs": 1}, "mnist": {"epochs": 1, "file": str(small_mnist)},
                       "robustness": TINY_SUITE})
    record = run_pipeline([small_sample], out, config=config, quiet=True)
    expected = {"ingest", "image", "train", "mnist-train", "robustness", "mnist-robustness", "report"}
    assert set(record["stages"]) == expected
    saved = json.loads((out / "run.json").read_text())
    assert saved["config"]["mnist"]["file"] == str(small_mnist) and saved["config"]["train"]["epochs"] == 1
    assert saved["config"]["run"]["captures"] == [str(small_sample)]
    from pcapvision.classify import read_metadata

    # Traffic: the compare winner; MNIST: the proof of concept's plain CNN.
    assert read_metadata(out / "model")["params"]["arch"] == "cnn1d"
    assert read_metadata(out / "mnist-model")["params"]["arch"] == "cnn"

    page = (out / "report.html").read_text()
    # Both models, side by side, in every section that compares them.
    assert "traffic CNN" in page and "MNIST CNN" in page
    for section in ("Training curves", "Confusion matrices", "Robustness to adversarial attacks (both models)",
                    "Robustness to distortions (both models)", "Adversarial examples", "Fooling images",
                    "Byte-realizable attack"):
        assert f"<h2>{section}" in page, section
    for model in ("traffic", "MNIST"):
        assert f"{model}: accuracy " in page and "before any attack" in page  # the attack-curve sentence
        assert f"{model}: starting from noise" in page
    assert page.count("<img") >= 12
    assert "mnist-robustness/robustness.html" in page and "model/report/report.html" in page
    assert "src=\"http" not in page and "<script" not in page  # self-contained

    again = run_pipeline([small_sample], out, config=config, quiet=True)
    assert [name for name in expected - {"ingest"} if not again["stages"][name]["reused"]] == []
    assert again["stages"]["ingest"]["files_skipped_already_ingested"] == 6
    assert (out / "report.html").read_text() == page


def test_new_label_rules_redo_every_stage(small_sample, tmp_path):
    """Edited label rules (same file, one more rule): the parts are re-ingested and the images
    redone; here no flow's label changed, so the images' data is the same and the model is
    reused on its content hash."""
    sample = tmp_path / "sample"
    shutil.copytree(small_sample, sample)
    out = tmp_path / "out"
    _run(sample, out)
    with open(sample / "labels.csv", "a", newline="") as rules:
        header = (sample / "labels.csv").read_text().splitlines()[0].split(",")
        csv.DictWriter(rules, fieldnames=header).writerow({**{c: "" for c in header}, "label": "never",
                                                           "src_ip": "192.0.2.255"})
    relabelled = _run(sample, out)
    assert relabelled["stages"]["ingest"]["files_reingested"] == 6
    assert not relabelled["stages"]["image"]["reused"] and relabelled["stages"]["train"]["reused"]


def test_run_json_holds_the_robustness_headline_figures(small_sample, tmp_path, monkeypatch):
    import pcapvision.robustness

    calls = []

    def fake_suite(model_dir, data, output_dir, suite, **kw):
        from dataclasses import asdict

        from pcapvision.classify import load_images_dataset, read_metadata
        from pcapvision.robustness import suite_config

        calls.append(kw)
        meta = read_metadata(model_dir)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "robustness.json").write_text(json.dumps({
            "stage": "robustness", "model": {"model_sha256": meta["model_sha256"]},
            "data": {"data_sha256": load_images_dataset(data).data_sha256},
            "params": {"suite": suite, "seed": kw["seed"], "config": asdict(kw["config"] or suite_config(suite)),
                       "positive_class": meta["positive_class"]}}))
        return {"summary": [{"measure": "clean accuracy", "value": 0.9},
                            {"measure": "pgd_linf eps 0.1 malicious->normal evasion", "value": 0.25}]}

    monkeypatch.setattr(pcapvision.robustness, "run_suite", fake_suite)
    out = tmp_path / "out"
    record = run_pipeline([small_sample], out, epochs=1, suite="quick", seed=0, quiet=True, positive_class="malicious",
                          mnist=False)
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["stages"]["robustness"]["headline"][1]["value"] == 0.25
    assert "traffic robustness: pgd_linf eps 0.1 malicious->normal evasion: 0.2500" in format_run(record)
    again = run_pipeline([small_sample], out, epochs=1, suite="quick", seed=0, quiet=True, positive_class="malicious",
                         mnist=False)
    assert again["stages"]["robustness"]["reused"] and again["stages"]["robustness"]["headline"] and len(calls) == 1


def test_a_run_whose_every_capture_fails_says_so_instead_of_a_missing_flows_table(tmp_path):
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "a.pcap").write_text("not a capture\n")
    (captures / "b.pcap").write_bytes(b"\x00" * 64)
    with pytest.raises(CaptureFormatError, match=r"every capture failed to ingest \(2 of 2\)"):
        _run(captures, tmp_path / "out")
    assert not (tmp_path / "out" / "images.parquet").exists()
