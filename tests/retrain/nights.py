"""Simulated nights of labelled captures: synth corpora (seed = night) added to one data directory."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pcapvision.synth import generate

FLOWS = 300
FLIP = {"normal": "malicious", "malicious": "normal"}
# A flipped night is this many times larger than the others, so that its labels dominate what the
# challenger learns: small models on a ~100-row holdout are too noisy to show a minority of
# mislabelled captures reliably (TLS key material, hence every image, differs run to run).
FLIP_SCALE = 3


def add_night(data: Path, corpora: Path, night: int, *, flip: bool = False, flows: int = FLOWS) -> None:
    """Generate night ``night``'s captures into data/nightN and append its label rules (every
    label flipped when ``flip``, and ``FLIP_SCALE`` times the flows)."""
    out = generate(corpora / f"night{night}", flows=flows * (FLIP_SCALE if flip else 1), seed=night, difficulty="easy", hosts_per_class=4,
                   quiet=True).output_dir
    target = data / f"night{night}"
    target.mkdir(parents=True)
    for pcap in sorted(out.glob("*.pcap")):
        os.link(pcap, target / pcap.name)
    rules = data / "labels.csv"
    with open(out / "labels.csv", newline="") as src:
        rows = list(csv.DictReader(src))
    new_file = not rules.exists()
    with open(rules, "a", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        if new_file:
            writer.writeheader()
        for row in rows:
            row["file"] = f"*night{night}/{row['file']}"
            if flip:
                row["label"] = FLIP[row["label"]]
            writer.writerow(row)
