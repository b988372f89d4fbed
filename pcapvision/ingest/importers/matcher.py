"""The match report: did the imported labels land on pcapvision's flows, and where not, why.

Records are matched to flows independently of the rules file: a 5-tuple record matches the flows of
its undirected 5-tuple (the Community ID key) whose ``first_seen_ns`` lies in one of its windows;
a per-file record matches the flows of the captures its globs name. The rules file is then applied
to the same flows with :class:`~pcapvision.ingest.labels.Labeler`, and the labels it gives are the
ones reported (``flows.labels_by_rules``); a flow where the two disagree is counted in
``flows.rules_disagree`` (expected 0) with examples.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pcapvision.errors import DataContractError
from pcapvision.ingest.importers.records import Record, Window
from pcapvision.ingest.importers.rules import seconds_text
from pcapvision.ingest.labels import Labeler
from pcapvision.io import parquet_files

log = logging.getLogger(__name__)

FLOW_COLUMNS = ("flow_id", "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "first_seen_ns", "source_file",
                "tls_sni", "label", "family", "label_source")
MAX_EXAMPLES = 5


def read_flow_keys(flows: str | Path | pa.Table) -> pa.Table:
    """The columns matching needs, from a flows table (Parquet file, dataset directory or a table)."""
    parts = [flows] if isinstance(flows, pa.Table) else parquet_files(flows)
    for part in parts:
        schema = part.schema if isinstance(part, pa.Table) else pq.read_schema(part)
        missing = [c for c in FLOW_COLUMNS if c not in schema.names]
        if missing:
            where = "the flows table" if isinstance(part, pa.Table) else str(part)
            raise DataContractError(f"{where}: not a pcapvision flows table (no column {missing[0]!r})")
    if isinstance(flows, pa.Table):
        return flows.select(list(FLOW_COLUMNS))
    tables = [pq.read_table(part, columns=list(FLOW_COLUMNS)) for part in parts]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def _flow_key(src: str, sport: int, dst: str, dport: int, protocol: int) -> Any:
    a, b = (src, sport), (dst, dport)
    return (a, b, protocol) if a <= b else (b, a, protocol)


def _example(record: Record, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"record": record.source, "label": record.label}
    if record.src_ip is not None:
        out["tuple"] = f"{record.src_ip}:{record.src_port} -> {record.dst_ip}:{record.dst_port} proto {record.protocol}"
        out["windows"] = [[seconds_text(w.from_ns), seconds_text(w.to_ns)] + ([w.note] if w.note else [])
                          for w in record.windows]
    else:
        out["files"] = list(record.file_globs)
    return {**out, **extra}


class _Examples(defaultdict):
    def __init__(self) -> None:
        super().__init__(list)

    def add(self, reason: str, example: dict[str, Any]) -> None:
        if len(self[reason]) < MAX_EXAMPLES:
            self[reason].append(example)


def match_flows(records: list[Record], flows: pa.Table, rules_path: str | Path | None,
                default_label: str | None = None) -> dict[str, Any]:
    """The ``records`` and ``flows`` sections of the match report (see docs/ingest-labels.md)."""
    n = flows.num_rows
    src, dst = flows.column("src_ip").to_pylist(), flows.column("dst_ip").to_pylist()
    sport, dport = flows.column("src_port").to_pylist(), flows.column("dst_port").to_pylist()
    proto = flows.column("protocol").to_pylist()
    first_seen = flows.column("first_seen_ns").to_numpy()
    files = flows.column("source_file").to_pylist()
    flow_id = flows.column("flow_id").to_pylist()
    by_key: dict[Any, list[int]] = defaultdict(list)
    keys: list[Any] = []
    for i in range(n):
        keys.append(_flow_key(src[i], sport[i], dst[i], dport[i], proto[i]))
        by_key[keys[-1]].append(i)
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(files):
        by_file[name].append(i)

    hits: list[list[int]] = [[] for _ in range(n)]
    shifts: dict[str, Counter] = {"labeled": Counter(), "unlabeled": Counter()}
    counts: Counter = Counter()
    notes: Counter = Counter()
    examples = _Examples()
    for index, record in enumerate(records):
        kind = "unlabeled" if record.label is None else "labeled"
        counts[f"{kind}_total"] += 1
        if record.key is not None:
            candidates = by_key.get(record.key, [])
            matched, window_notes = [], set()
            for i in candidates:
                for w in record.windows:
                    if w.from_ns <= first_seen[i] < w.to_ns:
                        matched.append(i)
                        window_notes.add(w.note)
                        break
            if not candidates:
                reason = "no_flow_with_5tuple"
            elif not matched:
                reason = "time_outside"
                gap, shift = min((_gap(int(first_seen[i]), w) for i in candidates for w in record.windows),
                                 key=lambda pair: pair[0])
                shifts[kind][shift] += 1
                examples.add(f"{kind}_{reason}", _example(record, flows_with_5tuple=len(candidates),
                                                          nearest_gap_s=round(gap / 1e9, 3)))
            else:
                reason = None
                if any((src[i], sport[i]) != (record.src_ip, record.src_port) for i in matched):
                    notes[f"{kind}_reversed_direction"] += 1
                    examples.add(f"{kind}_reversed_direction", _example(record, flow_ids=[flow_id[i] for i in matched]))
                if len(candidates) > len(matched):
                    notes[f"{kind}_5tuple_reused_told_apart_by_time"] += 1
                for note in window_notes - {""}:
                    notes[f"{kind}_matched_{note}_reading"] += 1
                if len(window_notes - {""}) > 1:
                    examples.add(f"{kind}_matched_both_clock_readings", _example(record))
        else:
            matched = sorted({i for name, rows in by_file.items() if _file_matches(name, record.file_globs)
                              for i in rows})
            reason = None if matched else "no_flow_from_file"
        if reason is not None:
            counts[f"{kind}_unmatched_{reason}"] += 1
            if reason != "time_outside":
                examples.add(f"{kind}_{reason}", _example(record))
            continue
        counts[f"{kind}_matched"] += 1
        if len(matched) > 1:
            counts[f"{kind}_matched_several_flows"] += 1
            if record.key is not None:
                examples.add(f"{kind}_matched_several_flows", _example(record, flows=len(matched)))
        if record.label is not None:
            for i in matched:
                hits[i].append(index)

    labeled_keys = {r.key for r in records if r.label is not None and r.key is not None}
    expected: list[str | None] = []
    flow_counts: Counter = Counter()
    for i in range(n):
        labels = sorted({records[r].label for r in hits[i]})
        if not hits[i]:
            flow_counts["matched_no_record"] += 1
            if keys[i] in labeled_keys:  # the ground truth knows the 5-tuple, at other times
                flow_counts["matched_no_record_5tuple_known_at_other_times"] += 1
        elif len(hits[i]) == 1:
            flow_counts["matched_one_record"] += 1
        elif len(labels) == 1:
            flow_counts["matched_several_records_agreeing"] += 1
        if len(labels) > 1:
            flow_counts["conflict"] += 1
            examples.add("flow_conflict", {
                "flow_id": flow_id[i], "tuple": f"{src[i]}:{sport[i]} -> {dst[i]}:{dport[i]} proto {proto[i]}",
                "first_seen": seconds_text(int(first_seen[i])), "source_file": files[i],
                "records": [records[r].source for r in hits[i]], "labels": labels})
        expected.append(labels[0] if len(labels) == 1 else default_label)

    flows_section: dict[str, Any] = {"total": n, **{k: flow_counts.get(k, 0) for k in (
        "matched_no_record", "matched_no_record_5tuple_known_at_other_times", "matched_one_record",
        "matched_several_records_agreeing", "conflict")}}
    if rules_path is not None:
        applied = _apply_rules(rules_path, flows)
        disagree = [i for i in range(n) if applied[i] != expected[i]]
        flows_section["labels_by_rules"] = dict(sorted(Counter(x or "unlabeled" for x in applied).items()))
        flows_section["rules_disagree"] = len(disagree)
        for i in disagree[:MAX_EXAMPLES]:
            examples.add("flow_rules_disagree", {"flow_id": flow_id[i], "by_rules": applied[i],
                                                 "by_matching": expected[i]})
        if disagree:
            log.warning("%s: %d flows got another label from the rules than from matching the records",
                        rules_path, len(disagree))
    kinds = ["labeled"] + (["unlabeled"] if counts["unlabeled_total"] else [])
    reasons = ("no_flow_with_5tuple", "time_outside") if any(r.key is not None for r in records) \
        else ("no_flow_from_file",)
    for kind in kinds:  # the same keys in every report, zeros included
        for name in ("total", "matched", "matched_several_flows", *(f"unmatched_{r}" for r in reasons)):
            counts[f"{kind}_{name}"] += 0
        if reasons[0] == "no_flow_with_5tuple":
            for name in ("reversed_direction", "5tuple_reused_told_apart_by_time"):
                notes[f"{kind}_{name}"] += 0
    records_section = {k: counts[k] for k in sorted(counts)}
    records_section.update({k: notes[k] for k in sorted(notes)})
    out = {"records": records_section, "flows": flows_section, "examples": dict(sorted(examples.items()))}
    if shifts["labeled"]:
        # A wrong --tz or clock reading shows as most records missing their flow by the same hours.
        out["time_outside_shift_h"] = {f"{h:+.1f}": c for h, c in shifts["labeled"].most_common(5)}
    return out


def _gap(first_seen: int, window: Window) -> tuple[int, float]:
    """(ns from the window to a flow start outside it, the flow's shift from the window's start
    in hours rounded to the half hour: how far a time zone or clock reading would be off)."""
    gap = window.from_ns - first_seen if first_seen < window.from_ns else first_seen - window.to_ns + 1
    return gap, round((first_seen - window.from_ns) / 1_800e9) / 2


def _file_matches(name: str, globs: tuple[str, ...]) -> bool:
    base = Path(name).name
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(base, g) for g in globs)


def _apply_rules(rules_path: str | Path, flows: pa.Table) -> list[str | None]:
    """The label the rules file gives each flow (flows grouped by capture, as ingest labels them)."""
    labeler = Labeler.from_rules_csv(rules_path)
    out: list[str | None] = [None] * flows.num_rows
    files = np.asarray(flows.column("source_file").to_pylist(), dtype=object)
    for name in dict.fromkeys(files.tolist()):
        rows = np.flatnonzero(files == name)
        labels, _, _ = labeler.assign(flows.take(pa.array(rows)).combine_chunks(), name)
        for i, label in zip(rows.tolist(), labels.to_pylist()):
            out[i] = label
    return out
