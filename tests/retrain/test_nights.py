"""Four simulated nights through 'pcapvision retrain' (small synth corpora, few epochs).

One registry lives through the whole story, run once per module: night 1 creates the champion;
a re-run with nothing new does nothing; night 2 brings more data; night 3's captures carry
flipped labels and must be rejected by a named gate; rollback restores the previous champion;
a run while the registry is locked is refused; a run killed mid-training leaves the registry
as it was and the next run (night 4) succeeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcapvision.cli import main
from pcapvision.lock import exclusive_lock
from pcapvision.retrain import open_registry
from tests.retrain.nights import add_night

EPOCHS = 6
# The holdout here has ~90 rows, so one row moves a figure by more than a point and the default
# tolerances (0.5, 0.2 and 2 points) would judge noise. Every image also changes from run to run
# (synth's TLS key material is random), and so do the models: night 2's FGSM robust accuracy was
# 0.78 in one run against the champion's 0.95, where other runs passed a 0.08 tolerance. These
# tolerances are wide enough for that swing and far narrower than what flipped labels do (night 3:
# malicious F1 0.17 vs 0.90, false positive rate 1.0 vs 0.0, FGSM 0.09 vs 0.91). On corpora this
# small the CNN does not beat every trivial baseline either (test_policy covers the gates on fixed
# figures). The story is the life cycle.
CONFIG = f"""
[training]
epochs = {EPOCHS}
seed = 0
[gates]
max_f1_drop = 0.15
max_fpr_rise = 0.15
max_robust_accuracy_drop = 0.3
beat_baselines = false
"""


def _http_capture(path: Path) -> Path:
    """Plain-HTTP flows (no TLS at all): traffic unlike anything the synth corpora hold."""
    from tests.ingest.crafted import PacketSpec, Record, write_pcap

    records, t = [], 1_700_000_000_000_000_000
    for i in range(24):
        client, server, port = "10.1.0.5", f"10.2.0.{80 + i % 4}", 50000 + i
        request = (f"GET /page{i}.html HTTP/1.1\r\nHost: intranet{i % 4}.example\r\nUser-Agent: curl/8.0\r\n"
                   "Accept: */*\r\n\r\n").encode()
        body = ("<html><head><title>Intranet</title></head><body>" + "<p>plain text line</p>" * (20 + i) +
                "</body></html>").encode()
        response = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " + str(len(body)).encode() + \
            b"\r\n\r\n" + body
        for spec in (PacketSpec(client, server, port, 80, flags="S", seq=1000),
                     PacketSpec(server, client, 80, port, flags="SA", seq=5000),
                     PacketSpec(client, server, port, 80, flags="A", seq=1001),
                     PacketSpec(client, server, port, 80, seq=1001, payload=request),
                     PacketSpec(server, client, 80, port, seq=5001, payload=response[:1400]),
                     PacketSpec(server, client, 80, port, seq=5001 + 1400, payload=response[1400:2800]),
                     PacketSpec(client, server, port, 80, flags="FA", seq=1001 + len(request))):
            t += 1_000_000
            records.append(Record(t, _ethernet(spec)))
    return write_pcap(path, records)


def _ethernet(spec) -> bytes:
    from tests.ingest.crafted import ethernet

    return ethernet(spec.ip_packet())


def _snapshot(reg: Path) -> dict:
    registry = open_registry(reg)
    return {"aliases": registry.aliases(), "versions": registry.version_numbers(),
            "visible": sorted(p.name for p in (reg / "versions").iterdir() if not p.name.startswith("."))}


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("nights")
    data, corpora, reg = root / "data", root / "corpora", root / "registry"
    config = root / "retrain.toml"
    config.write_text(CONFIG)
    results: dict = {}

    def run() -> tuple[int, dict]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["retrain", "--data", str(data), "--registry", str(reg), "--config", str(config), "--quiet"])
        lines = [line for line in buf.getvalue().splitlines() if line.strip()]
        assert len(lines) == 1, lines
        return code, json.loads(lines[0])

    add_night(data, corpora, 1)
    results["night1"] = run()
    results["noop"] = run()
    add_night(data, corpora, 2)
    results["night2"] = run()
    results["before_flip"] = _snapshot(reg)
    add_night(data, corpora, 3, flip=True)
    results["night3"] = run()
    results["after_flip"] = _snapshot(reg)
    results["night3_record"] = open_registry(reg).version(results["night3"][1]["version"])

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        results["rollback_code"] = main(["models", "rollback", "--registry", str(reg)])
    results["after_rollback"] = _snapshot(reg)
    for action in (["list"], ["show", "3"]):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["models", *action, "--registry", str(reg)]) == 0
        results[f"models_{action[0]}"] = buf.getvalue()

    add_night(data, corpora, 4)
    with exclusive_lock(reg / ".lock", what="test"):
        results["locked"] = run()
    results["before_kill"] = _snapshot(reg)
    child = subprocess.Popen([sys.executable, "-m", "pcapvision", "retrain", "--data", str(data), "--registry", str(reg),
                              "--config", str(config), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    staging = []
    while time.monotonic() < deadline and child.poll() is None:
        staging = [p for p in (reg / "versions").glob(".staging-*/train-images.parquet")]
        if staging:
            time.sleep(1.0)  # training has begun
            break
        time.sleep(0.2)
    assert staging and child.poll() is None, "the killed run never reached training"
    child.send_signal(signal.SIGKILL)
    child.wait()
    results["after_kill"] = _snapshot(reg)
    results["night4"] = run()
    results["after_night4"] = _snapshot(reg)
    results["registry"] = reg
    for name, capture in (("same", next((data / "night4").glob("*.pcap"))), ("http", _http_capture(root / "http.pcap"))):
        out = root / f"verdicts-{name}.parquet"
        with contextlib.redirect_stdout(io.StringIO()):
            results[f"predict_{name}_code"] = main(["predict", "--registry", str(reg), str(capture), "-o", str(out)])
        results[f"predict_{name}"] = out
    return results


def test_first_night_creates_the_champion(story):
    code, line = story["night1"]
    assert (code, line["status"], line["version"], line["champion_after"]) == (0, "promoted", 1, 1), line
    assert line["champion_before"] is None and line["new_groups"] == 8


def test_a_night_with_nothing_new_does_nothing(story):
    code, line = story["noop"]
    assert (code, line["status"], line["version"], line["new_groups"]) == (0, "nothing-to-do", None, 0)


def test_more_data_is_promoted(story):
    code, line = story["night2"]
    assert (code, line["status"], line["champion_before"], line["champion_after"]) == (0, "promoted", 1, 2), line
    assert story["before_flip"]["aliases"]["previous"] == [1]


def test_flipped_labels_are_rejected_by_a_named_gate(story):
    code, line = story["night3"]
    assert (code, line["status"], line["champion_after"]) == (5, "rejected", 2), line
    assert line["failed_gates"] and all(g.startswith("gate ") for g in line["failed_gates"])
    # each failed gate is named in the line, with both figures in the version record
    gates = {g["gate"]: g for g in story["night3_record"]["gates"]}
    failed = [name for name, g in gates.items() if not g["passed"]]
    assert failed and {"malicious_f1", "malicious_false_positive_rate", "fgsm_robust_accuracy"} >= set(failed)
    for name in failed:
        assert gates[name]["champion"] is not None and gates[name]["challenger"] is not None
        assert any(line_.startswith(f"gate {name} failed: challenger ") for line_ in line["failed_gates"])
    assert story["after_flip"]["aliases"]["champion"] == 2
    assert story["night3_record"]["decision"] == "rejected"


def test_rollback_restores_the_previous_champion(story):
    assert story["rollback_code"] == 0
    assert story["after_rollback"]["aliases"]["champion"] == 1
    assert story["after_rollback"]["aliases"]["history"][-1]["action"] == "rollback"


def test_models_list_and_show(story):
    rows = [line.split() for line in story["models_list"].splitlines()[1:]]
    assert [(r[0], r[2]) for r in rows] == [("1", "promoted"), ("2", "promoted"), ("3", "rejected")]
    # after the rollback version 1 is the champion again and nothing is left to roll back to
    assert rows[0][3] == "champion" and "champion" not in rows[1] and "champion" not in rows[2]
    shown = json.loads(story["models_show"])
    assert shown["version"] == 3 and shown["decision"] == "rejected" and shown["champion"] is False
    assert shown["failed_gates"] and shown["data"]["train_groups"]


def test_a_concurrent_run_is_refused(story):
    code, line = story["locked"]
    assert (code, line["status"]) == (4, "locked")
    assert "another test is running" in line["error"]


def test_a_run_killed_mid_training_leaves_the_registry_consistent(story):
    before, after = story["before_kill"], story["after_kill"]
    assert after["aliases"] == before["aliases"]
    assert after["versions"] == before["versions"] and after["visible"] == before["visible"]
    code, line = story["night4"]
    assert code in (0, 5) and line["status"] in ("promoted", "rejected"), line
    assert line["new_groups"] == 8  # the killed run's work is redone
    assert story["after_night4"]["versions"] == before["versions"] + [line["version"]]
    assert not list((story["registry"] / "versions").glob(".staging-*"))


def test_predict_with_the_registry_says_when_flows_are_unlike_the_training_data(story):
    import pandas as pd

    assert story["predict_same_code"] == 0 and story["predict_http_code"] == 0
    same = pd.read_parquet(story["predict_same"])
    http = pd.read_parquet(story["predict_http"])
    for verdicts in (same, http):
        assert {"nn_distance", "in_distribution"} <= set(verdicts.columns)
    same_far = 1 - same.loc[same["imaged"], "in_distribution"].mean()
    http_far = 1 - http.loc[http["imaged"], "in_distribution"].mean()
    assert http["imaged"].sum() >= 20
    assert http_far > 0.5 > same_far, (same_far, http_far)
