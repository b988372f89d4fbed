"""One small generated corpus shared by the synth tests (generation is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapvision.synth import SynthSummary, generate

# Seed 2 with "hard": dual-stack hosts (IPv6 flows), losses and reordering, all families.
CORPUS = {"flows": 150, "seed": 2, "difficulty": "hard", "hosts_per_class": 2, "max_flow_kib": 16}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "corpus", quiet=True, **CORPUS)


@pytest.fixture(scope="session")
def corpus_dir(corpus: SynthSummary) -> Path:
    return corpus.output_dir
