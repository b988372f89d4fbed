"""The pipeline configuration: defaults, TOML file, unknown keys, overrides, 'config show'."""

from __future__ import annotations

import tomllib

import pytest

from pcapvision.cli import main
from pcapvision.config import OPTIONS, SECTIONS, apply_overrides, default_config, load_config, render_toml
from pcapvision.errors import ParameterError


def test_config_show_is_a_commented_toml_file_of_the_defaults(capsys):
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text) == default_config()
    assert "# maximum epochs of the MNIST model" in text
    for section, (_, keys) in SECTIONS.items():
        assert f"[{section}]" in text
        assert all(f"\n{k.name} = " in text for k in keys)


def test_file_values_override_defaults_and_cli_overrides_file(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text('[train]\nepochs = 3\narch = "mlp"\n[ingest]\nidle_timeout_s = 30\n[image]\nparams = { max_bytes = 1500 }\n')
    cfg = load_config(path)
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["arch"] == "mlp"
    assert cfg["ingest"]["idle_timeout_s"] == 30.0 and isinstance(cfg["ingest"]["idle_timeout_s"], float)
    assert cfg["image"]["params"] == {"max_bytes": 1500}
    assert cfg["mnist"]["epochs"] == default_config()["mnist"]["epochs"]
    merged = apply_overrides(cfg, {"epochs": 7, "suite": None, "captures": [tmp_path]})
    assert merged["train"]["epochs"] == 7 and merged["train"]["arch"] == "mlp"
    assert merged["robustness"]["suite"] == "quick" and merged["run"]["captures"] == [str(tmp_path)]
    assert tomllib.loads(render_toml(merged))["train"]["epochs"] == 7
    assert set(OPTIONS) >= {"epochs", "suite", "mnist", "executor", "scheduler"}


@pytest.mark.parametrize(("text", "message"), [
    ("[train]\nepoch = 3\n", "unknown key 'epoch' in section [train]"),
    ("[trian]\nepochs = 3\n", "unknown section [trian]"),
    ("[train]\nepochs = 2.5\n", "[train] epochs must be an int. Got 2.5 instead."),
    ("[train]\nepochs = 0\n", "[train] epochs must be >= 1. Got 0 instead."),
    ("[robustness]\nsuite = \"huge\"\n", "[robustness] suite must be one of ['quick', 'full', 'none']"),
    ("[ingest]\nidle_timeout_s = inf\n", "[ingest] idle_timeout_s must be a finite number"),
    ("[mnist]\nenabled = 1\n", "[mnist] enabled must be true or false"),
    ("[train\n", "not a valid TOML file"),
])
def test_bad_config_is_a_usage_error_naming_key_and_section(tmp_path, capsys, text, message):
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ParameterError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", str(path), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_cli_override_names_the_option():
    with pytest.raises(ParameterError, match=r"command line: \[train\] epochs must be >= 1"):
        apply_overrides(default_config(), {"epochs": 0})
    with pytest.raises(ParameterError, match="unknown run option 'epoch'"):
        apply_overrides(default_config(), {"epoch": 3})


def test_run_on_a_directory_with_no_captures_fails_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(empty), "-o", str(tmp_path / "out"), "--no-mnist", "--suite", "none"]) == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("pcapvision run: error: ") and str(empty) in last and "holds no capture files" in last
