"""The key tables of docs/contracts.md, read back, and a check of a written JSON file against them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parent.parent / "docs" / "contracts.md"

# (file, container path) -> the line that introduces its key table in docs/contracts.md.
TABLES = {
    ("metadata.json", ""): "`metadata.json` keys (every key",
    ("metadata.json", "params"): "`metadata.json` `params` keys:",
    ("robustness.json", ""): "`robustness.html`, `adversarial_examples.npz` and `robustness.json`, whose keys",
    ("robustness.json", "data"): "`data` keys:",
    ("robustness.json", "clean"): "`clean` keys:",
    ("robustness.json", "attacks[]"): "`attacks[]` (and `minimal_norm`) keys:",
    ("robustness.json", "minimal_norm"): "`attacks[]` (and `minimal_norm`) keys:",
    ("robustness.json", "defences"): "`defences` keys:",
    ("robustness.json", "realizable.*"): "`realizable.<strategy>` keys:",
}


def documented(intro: str) -> tuple[set[str], set[str]]:
    """``(always, sometimes)``: the keys of the table after the line starting with ``intro``."""
    lines = CONTRACTS.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(intro))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    always: set[str] = set()
    sometimes: set[str] = set()
    for row in rows[2:]:  # header and rule
        cells = [c.strip() for c in row.strip("|").split("|")]
        (sometimes if cells[1] else always).update(re.findall(r"`([^`]+)`", cells[0]))
    return always, sometimes


def _containers(record: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    if not path:
        return [record]
    name, _, rest = path.partition(".")
    if name.endswith("[]"):
        found = list(record.get(name[:-2]) or [])
    else:
        found = [record.get(name)]
    if rest == "*":
        found = [v for f in found if isinstance(f, Mapping) for v in f.values()]
    return [f for f in found if isinstance(f, Mapping) and "skipped" not in f]


def check_documented_keys(record: Mapping[str, Any], file: str) -> int:
    """Assert that every documented container of ``record`` holds exactly its documented keys
    (optional ones may be absent); return how many containers were compared."""
    compared = 0
    for (kind, path), intro in TABLES.items():
        if kind != file:
            continue
        always, sometimes = documented(intro)
        for container in _containers(record, path):
            keys = set(container)
            assert not keys - always - sometimes, f"{file} {path or '(top level)'}: undocumented {sorted(keys - always - sometimes)}"
            assert not always - keys, f"{file} {path or '(top level)'}: documented but not written {sorted(always - keys)}"
            compared += 1
    return compared
