"""Stages use each other's public API only, and each stage exports what its docstring promises."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pcapvision"
STAGES = ("ingest", "imaging", "classify", "robustness", "synth", "compare")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pcapvision."):
            yield node.module


def _owner(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 and rel[0] in STAGES else None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_stages_submodule(path):
    owner = _owner(path)
    for module in _imports(path):
        parts = module.split(".")
        if len(parts) >= 3 and parts[1] in STAGES and parts[1] != owner:
            pytest.fail(f"{path.relative_to(PACKAGE)} imports {module}: use pcapvision.{parts[1]}'s public API")


def test_classify_exports_the_functions_its_docstring_lists():
    classify = importlib.import_module("pcapvision.classify")
    promised = set(re.findall(r"^\s+(?:[\w, ]*?\b)?([a-z_]+)\(", classify.__doc__, re.M))
    promised |= set(re.findall(r"\b([a-z_]+)\(\.\.\.", classify.__doc__))
    for name in ("train_mnist", "train_images", "evaluate", "predict_pcaps", "resolve_test_rows"):
        assert name in promised
    missing = sorted(n for n in promised if not hasattr(classify, n) or n not in classify.__all__)
    assert not missing, f"pcapvision.classify promises but does not export {missing}"


def test_the_spelled_out_choices_equal_the_stages_own():
    # pcapvision.choices spells them out (importing a stage would load numpy, pyarrow and numba for
    # every command, even --help): they must not drift from the stages' definitions.
    from pcapvision import choices, cli, config
    from pcapvision.classify import ARCHITECTURES
    from pcapvision.compare import DEFAULT_ARCHS, DEFAULT_REPRS
    from pcapvision.imaging import REPRESENTATIONS
    from pcapvision.ingest import LABEL_FORMATS, IngestOptions
    from pcapvision.ingest.assembler import ON_HOLE
    from pcapvision.ingest.constants import READERS

    assert (choices.READERS, choices.ON_HOLE, choices.LABEL_FORMATS) == (READERS, ON_HOLE, LABEL_FORMATS)
    assert choices.REPRESENTATIONS == tuple(REPRESENTATIONS)
    assert choices.ARCHITECTURES == ARCHITECTURES
    assert (choices.COMPARE_REPRESENTATIONS, choices.COMPARE_ARCHITECTURES) == (DEFAULT_REPRS, DEFAULT_ARCHS)
    cli_choices = {field: shape for _, field, _, _, shape, _ in cli._INGEST_OPTIONS if isinstance(shape, tuple)}
    config_choices = {key.name: key.choices for key in config.SECTIONS["ingest"][1] if key.choices}
    assert cli_choices == config_choices == {"reader": READERS, "on_hole": ON_HOLE}
    defaults = IngestOptions()
    assert {field: default for _, field, _, default, _, _ in cli._INGEST_OPTIONS} == {
        field: getattr(defaults, field) for field in ("idle_timeout_s", "active_timeout_s", "max_bytes",
                                                      "max_packets", "on_hole", "reader", "chunk_packets")}


@pytest.mark.parametrize("argv", [["--help"], ["ingest", "--help"], ["train", "--help"], ["run", "--help"],
                                  ["retrain", "--help"], ["compare", "--help"]])
def test_parsing_a_command_line_loads_no_heavy_library(argv):
    # Every command builds the whole parser: a stage imported there costs each command ~1.5 CPU s.
    probe = ("import sys\nfrom pcapvision.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
             "    pass\nprint(sorted(set(sys.modules) & {'numpy', 'pandas', 'pyarrow', 'numba', 'scipy', "
             "'tensorflow', 'keras', 'sklearn', 'dpkt', 'scapy'}))")
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", f"pcapvision {' '.join(argv)} loaded {out.splitlines()[-1]}"
