"""The CLI shell: every subcommand documents its options and takes --quiet/--debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pcapvision.cli import EXIT_USAGE, build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_stage_has_a_subcommand():
    assert {"ingest", "image", "train", "evaluate", "predict", "robustness", "synth", "run"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_help_lists_quiet_debug_and_defaults(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--quiet" in out and "--debug" in out


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ingest", "--no-such-option"])
    assert info.value.code == EXIT_USAGE


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "pcapvision", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("pcapvision ")


def test_missing_input_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pcapvision", "ingest", str(tmp_path / "nope.pcap"), "-o",
                             str(tmp_path / "f.parquet")], capture_output=True, text=True)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.pcap" in lines[0] and "Traceback" not in result.stderr
