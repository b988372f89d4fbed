"""Records -> a label rules CSV (the format of ``ingest --labels``), conflicts left unlabelled.

Records of one undirected 5-tuple are cut at every window boundary into segments of flow start
time; a segment covered by records that agree on the label becomes one rule (pinned to the
5-tuple, ``time_from``/``time_to`` = the segment); a segment covered by records with different
labels becomes no rule at all and is listed as a conflict, so a flow starting there is left
unlabelled (or takes ``--default-label``) instead of being decided by rule order. Records that
agree on the label but not on the family give a rule without family. The rules pin an exact
5-tuple, so they match a flow in either direction (the ground truth's initiator need not be
pcapvision's: no SYN seen, a flow meter that orders by port...). Per-file records become ``file`` rules.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pcapvision.ingest.importers.records import Record
from pcapvision.io import atomic_path

RULES_HEADER = ("label", "family", "rule_id", "file", "src_ip", "dst_ip", "src_port", "dst_port", "protocol",
                "time_from", "time_to")
DEFAULT_RULE_ID = "--default-label"


@dataclass(frozen=True)
class Conflict:
    """Records with different labels covering the same 5-tuple and start times."""

    key: Any
    from_ns: int
    to_ns: int
    sources: tuple[str, ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        (a, b, protocol) = self.key
        return {"endpoints": [f"{a[0]}:{a[1]}", f"{b[0]}:{b[1]}"], "protocol": protocol,
                "time_from": seconds_text(self.from_ns), "time_to": seconds_text(self.to_ns),
                "records": list(self.sources), "labels": list(self.labels)}


def seconds_text(ns: int) -> str:
    """Exact epoch seconds with nanoseconds, as the rules format reads them."""
    return str(Decimal(ns).scaleb(-9))


def _segments(records: list[Record]) -> tuple[list[tuple[int, int, Record, str | None]], list[Conflict]]:
    """Non-overlapping (from, to, first record, family) pieces where the covering records agree."""
    spans = [(w.from_ns, w.to_ns, order, r) for order, r in enumerate(records) for w in r.windows]
    if len(records) == 1:  # the usual case: nothing to agree on
        spans.sort()
        pieces = []
        for start, end, _, record in spans:
            if pieces and start <= pieces[-1][1]:
                pieces[-1] = (pieces[-1][0], max(end, pieces[-1][1]), record, record.family)
            else:
                pieces.append((start, end, record, record.family))
        return pieces, []
    bounds = sorted({b for s in spans for b in s[:2]})
    pieces: list[tuple[int, int, Record, str | None]] = []
    conflicts: list[Conflict] = []
    for low, high in zip(bounds, bounds[1:]):
        covering = sorted((order, r) for start, end, order, r in spans if start <= low and high <= end)
        if not covering:
            continue
        covering_records = [r for _, r in dict(covering).items()]
        labels = sorted({r.label for r in covering_records})
        if len(labels) > 1:
            sources = tuple(dict.fromkeys(r.source for r in covering_records))
            if conflicts and conflicts[-1].to_ns == low and conflicts[-1].sources == sources:
                last = conflicts[-1]
                conflicts[-1] = Conflict(last.key, last.from_ns, high, sources, last.labels)
            else:
                conflicts.append(Conflict(records[0].key, low, high, sources, tuple(labels)))
            continue
        families = {r.family for r in covering_records}
        family = families.pop() if len(families) == 1 else None
        first = covering_records[0]
        if pieces and pieces[-1][1] == low and pieces[-1][2] is first and pieces[-1][3] == family:
            pieces[-1] = (pieces[-1][0], high, first, family)
        else:
            pieces.append((low, high, first, family))
    return pieces, conflicts


def build_rules(records: list[Record], default_label: str | None = None,
                default_family: str | None = None) -> tuple[list[dict[str, Any]], list[Conflict]]:
    """Rule rows (dicts over :data:`RULES_HEADER`) and the conflicts left without a rule."""
    by_key: dict[Any, list[Record]] = defaultdict(list)
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.label is None:
            continue
        if record.key is not None:
            by_key[record.key].append(record)
        else:
            rows.extend({"label": record.label, "family": record.family, "rule_id": record.source, "file": glob}
                        for glob in record.file_globs)
    conflicts: list[Conflict] = []
    for group in by_key.values():
        pieces, found = _segments(group)
        conflicts.extend(found)
        for low, high, record, family in pieces:
            rows.append({"label": record.label, "family": family, "rule_id": record.source,
                         "src_ip": record.src_ip, "dst_ip": record.dst_ip, "src_port": record.src_port,
                         "dst_port": record.dst_port, "protocol": record.protocol,
                         "time_from": seconds_text(low), "time_to": seconds_text(high)})
    if default_label is not None:
        rows.append({"label": default_label, "family": default_family, "rule_id": DEFAULT_RULE_ID})
    return rows, conflicts


def write_rules(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rule rows as a rules CSV, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(RULES_HEADER)
            writer.writerows([row.get(name) for name in RULES_HEADER] for row in rows)
    return Path(path)
