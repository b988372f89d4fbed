"""Seeded generator of labelled encrypted traffic made with real TLS (``pcapvision synth``).

    >>> from pcapvision.synth import generate
    >>> summary = generate("out/", flows=500, seed=1, difficulty="realistic")  # doctest: +SKIP

See docs/synth.md for the families, the difficulty presets and what is (not) reproducible.
"""

from pcapvision.synth.generator import (
    LABEL_COLUMNS,
    FlowTruth,
    SynthSummary,
    generate,
    parse_mix,
    plan_traffic,
)
from pcapvision.synth.profiles import DEFAULT_MIX, DIFFICULTIES, FAMILIES, Difficulty, Family

__all__ = [
    "DEFAULT_MIX",
    "DIFFICULTIES",
    "FAMILIES",
    "LABEL_COLUMNS",
    "Difficulty",
    "Family",
    "FlowTruth",
    "SynthSummary",
    "generate",
    "parse_mix",
    "plan_traffic",
]
