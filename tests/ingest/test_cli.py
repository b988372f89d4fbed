"""``pcapvision ingest``: options, exit codes, what goes to stdout and stderr."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from pcapvision.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pcap"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    packets = [eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5000 + i, dport=53) / b"x" for i in range(3)]
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i
    wrpcap(str(good), packets)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    return {"good": good, "bad": bad}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_documents_every_option_with_its_default() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["ingest"]
    help_text = " ".join(sub.format_help().split())
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in help_text
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert f"(default: {action.default})" in help_text, action.dest
    for needle in ("--idle-timeout SECONDS", "(default: 120.0)", "(default: 1800.0)", "(default: 4096)",
                   "(default: 64)", "(default: 65536)", "{auto,dpkt,scapy}", "{keep,drop}", "--quiet", "--debug",
                   "Exit codes"):
        assert needle in help_text


def test_ok_run_prints_summary_to_stdout(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "flows.parquet"
    code, stdout, stderr = run(["ingest", str(inputs["good"]), "-o", str(out), "--label", "dns", "--quiet"], capsys)
    assert code == 0, stderr
    assert "files: 1 ok, 0 failed" in stdout and "flows: 3" in stdout
    assert stderr == ""
    assert pq.read_table(out).column("label").to_pylist() == ["dns"] * 3


def test_bad_input_exits_1_and_keeps_the_rest(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "flows"
    code, stdout, stderr = run(["ingest", str(inputs["bad"]), str(inputs["good"]), "-o", str(out)], capsys)
    assert code == 1
    assert "files: 1 ok, 1 failed" in stdout
    assert f"failed: {inputs['bad']}: " in stdout
    error_lines = [line for line in stderr.splitlines() if str(inputs["bad"]) in line]
    assert len(error_lines) == 1 and "Traceback" not in stderr
    assert pq.read_table(out).num_rows == 3


def test_glob_expanded_by_us(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, stdout, _ = run(["ingest", str(tmp_path / "go*.pcap"), "-o", str(tmp_path / "f.parquet")], capsys)
    assert code == 0 and "files: 1 ok" in stdout


def test_missing_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code, stdout, stderr = run(["ingest", str(tmp_path / "nothing*.pcap"), "-o", str(tmp_path / "f.parquet")], capsys)
    assert code == 1
    assert stderr.strip() == f"pcapvision ingest: error: {tmp_path / 'nothing*.pcap'}: no file matches this pattern"


@pytest.mark.parametrize("extra, message", [
    (["--jobs", "0"], "The 'jobs' parameter must be a positive int. Got 0 instead."),
    (["--idle-timeout", "-5"], "The 'idle_timeout_s' parameter must be a positive number. Got -5.0 instead."),
    (["--label", "a", "--labels", "r.csv"], "--label and --labels cannot be combined"),
    (["--family", "x"], "--family needs --label"),
    (["--default-label", "x"], "need --labels"),
    (["--reader", "tshark"], "invalid choice: 'tshark'"),
])
def test_usage_errors_exit_2(inputs: dict[str, Path], tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    code, _, stderr = run(["ingest", str(inputs["good"]), "-o", str(tmp_path / "f.parquet"), *extra], capsys)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr


def test_bad_rules_file_names_file_line_column(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.csv"
    rules.write_text("label,src_ip\nok,10.0.0.0/8\nbad,10.0.0.0/33\n")
    code, _, stderr = run(["ingest", str(inputs["good"]), "-o", str(tmp_path / "f.parquet"), "--labels", str(rules)],
                          capsys)
    assert code == 2
    assert f"{rules}:3: column 'src_ip': '10.0.0.0/33' is not an IP address or CIDR" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_rules_with_default_label_and_drop(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.csv"
    rules.write_text("label,src_port\nfirst,5000\n")
    out = tmp_path / "f.parquet"
    code, _, _ = run(["ingest", str(inputs["good"]), "-o", str(out), "--labels", str(rules),
                      "--default-label", "rest", "--default-family", "bg"], capsys)
    assert code == 0
    assert pq.read_table(out).select(["label", "family", "label_source"]).to_pylist() == [
        {"label": "first", "family": None, "label_source": "rules.csv:2"},
        {"label": "rest", "family": "bg", "label_source": "--default-label"},
        {"label": "rest", "family": "bg", "label_source": "--default-label"},
    ]
    code, stdout, _ = run(["ingest", str(inputs["good"]), "-o", str(out), "--labels", str(rules),
                           "--unlabeled", "drop", "--reader", "dpkt", "--max-bytes", "0"], capsys)
    assert code == 0 and "flows: 1" in stdout
    assert pq.read_table(out).column("payload").to_pylist() == [b""]


def test_real_process_exit_code_and_streams(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The console entry point end to end, as a nightly job would call it (stderr is not a TTY)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pcapvision", "ingest", str(tmp_path), "-o", str(tmp_path / "ds")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert re.search(r"^files: 1 ok, 1 failed, 0 skipped", proc.stdout, re.M)
    assert "Traceback" not in proc.stderr and "\r" not in proc.stderr  # no progress bar off a terminal
    again = subprocess.run([sys.executable, "-m", "pcapvision", "ingest", str(inputs["good"]), "-o",
                            str(tmp_path / "ds"), "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "1 skipped (already ingested)" in again.stdout and again.stderr == ""


def test_a_bug_exits_3_with_the_traceback_and_keeps_the_other_files(inputs: dict[str, Path], tmp_path: Path,
                                                                     capsys, monkeypatch) -> None:
    """A bug while reading one capture is an internal error, not bad input: exit 3, traceback on
    stderr, the other captures' flows written."""
    from pcapvision.ingest import flowstream

    second = tmp_path / "second.pcap"
    second.write_bytes(inputs["good"].read_bytes()[:-1] + b"y")  # other bytes, other hash
    real = flowstream.read_packets

    def buggy(path, **kwargs):
        if Path(path) == second:
            raise KeyError("a bug")
        return real(path, **kwargs)

    monkeypatch.setattr(flowstream, "read_packets", buggy)
    out = tmp_path / "flows.parquet"
    code, stdout, stderr = run(["ingest", str(inputs["good"]), str(second), "-o", str(out)], capsys)
    assert code == 3
    assert f"failed: {second}: internal error (KeyError: 'a bug')" in stdout
    assert "internal error(s)" in stdout and "Traceback" in stderr and "KeyError: 'a bug'" in stderr
    assert pq.read_table(out).num_rows == 3


def test_summary_packet_counts_add_up(tmp_path: Path, capsys) -> None:
    from tests.ingest import crafted as c

    records, _, _ = c.standard_records()
    path = c.write_pcap(tmp_path / "mixed.pcap", records)
    code, stdout, _ = run(["ingest", str(path), "-o", str(tmp_path / "f.parquet"), "--quiet"], capsys)
    assert code == 0
    numbers = {key: int(value.replace(",", "")) for key, value in
               re.findall(r"^(packets read|packets in flows|packets skipped): ([\d,]+)", stdout, re.M)}
    assert numbers["packets read"] == len(records)
    assert numbers["packets in flows"] + numbers["packets skipped"] == len(records)
    assert numbers["packets skipped"] > 0 and numbers["packets in flows"] > 0
