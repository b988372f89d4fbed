"""The match report of an import: what was read, written, and how the records matched flows."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pcapvision import __version__
from pcapvision.ingest.importers.matcher import match_flows, read_flow_keys
from pcapvision.ingest.importers.records import FileResult, ImportOptions, Record
from pcapvision.ingest.importers.rules import Conflict
from pcapvision.io import write_json_atomic


def report_path_for(rules_path: str | os.PathLike[str]) -> Path:
    """``rules.csv`` -> ``rules.match.json`` (beside it)."""
    path = Path(rules_path)
    return path.with_name(path.stem + ".match.json")


@dataclass
class MatchReport:
    """What an import read, wrote, and how its records matched a flows table (when given)."""

    format_name: str
    options: ImportOptions
    rules_path: Path
    files: list[FileResult]
    failed: list[dict[str, str]]
    records: list[Record] = field(repr=False)
    rules: int
    conflicts: list[Conflict]
    match: dict[str, Any] | None = None
    flows_source: str | None = None

    @property
    def report_path(self) -> Path:
        return report_path_for(self.rules_path)

    def with_flows(self, flows: str | os.PathLike[str] | pa.Table, source: str | None = None) -> MatchReport:
        """Match the records against ``flows`` and rewrite the report file; returns the new report.

        ``source`` names a table given in memory in the report (a path names itself)."""
        table = read_flow_keys(flows)
        match = match_flows(self.records, table, self.rules_path, self.options.default_label)
        source = source if isinstance(flows, pa.Table) else os.fspath(flows)
        report = MatchReport(self.format_name, self.options, self.rules_path, self.files, self.failed, self.records,
                             self.rules, self.conflicts, match, source)
        report.write()
        return report

    def to_dict(self) -> dict[str, Any]:
        labels = Counter(r.label or "unlabeled" for r in self.records)
        return {
            "pcapvision_version": __version__,
            "format": self.format_name,
            "params": self.options.to_dict(),
            "rules_file": str(self.rules_path),
            "ground_truth": {"files": [f.to_dict() for f in self.files], "failed": self.failed,
                             "records": len(self.records), "records_by_label": dict(sorted(labels.items()))},
            "rules": {"written": self.rules, "conflicts_left_without_rule": len(self.conflicts),
                      "conflict_examples": [c.to_dict() for c in self.conflicts[:5]]},
            "flows_table": self.flows_source,
            "match": self.match,
        }

    def write(self) -> Path:
        return write_json_atomic(self.report_path, self.to_dict())

    def format(self) -> str:
        """A few lines for the terminal (the JSON report has the examples)."""
        labels = Counter(r.label or "unlabeled" for r in self.records)
        skipped = sum((f.skipped for f in self.files), Counter())
        lines = [
            f"ground truth ({self.format_name}): {len(self.files)} file(s), {sum(f.rows for f in self.files)} rows -> "
            f"{len(self.records)} records ({_counts(labels)})"
            + (f"; skipped {_counts(skipped)}" if skipped else ""),
            f"rules: {self.rules} written to {self.rules_path}; {len(self.conflicts)} conflicting time span(s) "
            "left without a rule",
        ]
        lines += [f"failed: {f['error']}" for f in self.failed]
        lines += [f"note: {f.path}: {note}" for f in self.files for note in f.notes]
        if self.match is None:
            lines.append("match: no flows table given (pass the flows to see whether the labels land)")
        else:
            rec, flows = self.match["records"], self.match["flows"]
            total = rec.get("labeled_total", 0)
            matched = rec.get("labeled_matched", 0)
            share = f" ({100 * matched / total:.1f}%)" if total else ""
            unmatched = {k.removeprefix("labeled_unmatched_"): v for k, v in rec.items()
                         if k.startswith("labeled_unmatched_")}
            lines.append(f"labelled records that matched a flow: {matched} of {total}{share}; "
                         f"reversed direction {rec.get('labeled_reversed_direction', 0)}, "
                         f"several flows {rec.get('labeled_matched_several_flows', 0)}"
                         + (f"; unmatched: {_counts(unmatched)}" if unmatched else ""))
            hours, count = next(iter(self.match.get("time_outside_shift_h", {}).items()), (None, 0))
            outside = rec.get("labeled_unmatched_time_outside", 0)
            if count >= 3 and 2 * count >= outside and abs(float(hours)) >= 0.5:  # a pattern, not one record
                lines.append(f"time outside: {count} of {outside} such records miss their nearest flow by "
                             f"{hours} h - check --tz and --clock")
            readings = {k.removeprefix("labeled_matched_").removesuffix("_reading"): v for k, v in rec.items()
                        if k.endswith("_reading")}
            if readings:
                lines.append(f"12-hour clock readings that matched: {_counts(readings)}")
            lines.append(f"flows: {flows['total']}; matched no record {flows['matched_no_record']} "
                         f"({flows['matched_no_record_5tuple_known_at_other_times']} of them with a 5-tuple the "
                         f"ground truth has at other times), one "
                         f"{flows['matched_one_record']}, several agreeing {flows['matched_several_records_agreeing']}, "
                         f"conflict {flows['conflict']}")
            if "labels_by_rules" in flows:
                lines.append(f"flow labels from the rules: {_counts(flows['labels_by_rules'])}"
                             + (f"; DISAGREE with matching on {flows['rules_disagree']} flows"
                                if flows["rules_disagree"] else ""))
        lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def _counts(counter: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(dict(counter).items())) or "none"
