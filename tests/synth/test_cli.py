"""``pcapvision synth``: options, exit codes, summary on stdout."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapvision.cli import build_parser, main


def test_synth_command_writes_captures_and_prints_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["synth", "-o", str(tmp_path), "--flows", "30", "--seed", "3", "--difficulty", "easy",
                 "--mix", "port-scan=0,bulk-download=0", "--max-flow-kib", "8", "--hosts-per-class", "1", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "flows:" in out and "packets:" in out and "MB" in out and "seconds:" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "infected-host00.pcap", "labels.csv", "normal-host00.pcap", "synth.json"]
    assert "port-scan" not in (tmp_path / "labels.csv").read_text()


@pytest.mark.parametrize("argv", [["--difficulty", "medium"], ["--mix", "c2-beacon"], ["--flows", "0"],
                                  ["--mix", "telnet=1"], ["--loss-rate", "0.9"], ["--reorder-rate", "-1"]])
def test_synth_usage_errors_exit_2(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "-o", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "pcapvision synth: error:" in err.strip().splitlines()[-1]


def test_help_documents_every_option_with_its_default() -> None:
    parser = build_parser()
    synth = parser._subparsers._group_actions[0].choices["synth"]  # noqa: SLF001 - argparse has no public accessor
    text = synth.format_help()
    for option in ("--flows", "--seed", "--difficulty", "--mix", "--max-flow-kib", "--hosts-per-class", "--loss-rate",
                   "--reorder-rate", "--quiet"):
        assert option in text
    assert "(default: 2000)" in text and "(default: realistic)" in text and "(default: 64)" in text
