"""Label importers: other tools' ground truth -> a label rules CSV, with a match report.

    >>> from pcapvision.ingest.importers import ImportOptions, import_labels
    >>> report = import_labels(["Friday.pcap_ISCX.csv"], "cicflowmeter", "rules.csv",
    ...                        ImportOptions(tz="America/Halifax"), flows="flows.parquet")
    >>> print(report.format())          # also written to rules.match.json

Formats (one module each): :mod:`.cicflowmeter`, :mod:`.binetflow`, :mod:`.zeek`, :mod:`.suricata`,
:mod:`.folders`; :mod:`.records` (the common record, options, parsing), :mod:`.rules` (records ->
rules, conflicts), :mod:`.matcher` (records x flows -> report). Described in docs/ingest-labels.md.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pcapvision import __version__
from pcapvision.errors import GroundTruthFormatError, InputNotFoundError, ParameterError, PcapvisionError
from pcapvision.ingest.importers import binetflow, cicflowmeter, folders, suricata, zeek
from pcapvision.ingest.importers.matcher import match_flows, read_flow_keys
from pcapvision.ingest.importers.records import FileResult, ImportOptions, Record
from pcapvision.ingest.importers.rules import Conflict, build_rules, write_rules
from pcapvision.io import write_json_atomic
from pcapvision.validation import check_choice

log = logging.getLogger(__name__)

READERS = {
    "cicflowmeter": cicflowmeter.read,
    "binetflow": binetflow.read,
    "zeek": zeek.read,
    "suricata": suricata.read,
    "folders": folders.read,
}
LABEL_FORMATS = tuple(READERS)


def report_path_for(rules_path: str | os.PathLike[str]) -> Path:
    """``rules.csv`` -> ``rules.match.json`` (beside it)."""
    path = Path(rules_path)
    return path.with_name(path.stem + ".match.json")


def rules_path_for(flows_output: str | os.PathLike[str]) -> Path:
    """Where ``ingest --labels-format`` writes the imported rules: ``out/flows.parquet`` or the
    dataset directory ``out/flows`` -> ``out/flows.rules.csv`` (beside the flows, never inside)."""
    path = Path(flows_output)
    stem = path.stem if path.suffix == ".parquet" else path.name
    return path.with_name(stem + ".rules.csv")


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
            readings = {k.removeprefix("labeled_matched_").removesuffix("_reading"): v for k, v in rec.items()
                        if k.endswith("_reading")}
            if readings:
                lines.append(f"12-hour clock readings that matched: {_counts(readings)}")
            lines.append(f"flows: {flows['total']}; matched no record {flows['matched_no_record']}, one "
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


def read_ground_truth(paths: list[str | os.PathLike[str]], fmt: str,
                      options: ImportOptions | None = None) -> tuple[list[FileResult], list[dict[str, str]]]:
    """Read every file; a bad file is logged and listed in the failures, the others go on."""
    check_choice("format", fmt, LABEL_FORMATS)
    options = options or ImportOptions()
    results, failed = [], []
    for raw in paths:
        path = Path(raw)
        try:
            if not path.exists():
                raise InputNotFoundError(f"{path}: no such file or directory")
            results.append(READERS[fmt](path, options))
        except csv.Error as exc:
            failed.append({"path": str(path), "error": f"{path}: malformed CSV ({exc})"})
        except ParameterError:
            raise  # a usage error (bad option), not a bad file
        except (PcapvisionError, OSError, UnicodeError) as exc:
            message = " ".join(str(exc).split())
            failed.append({"path": str(path), "error": message if str(path) in message else f"{path}: {message}"})
    return results, failed


def import_labels(paths: list[str | os.PathLike[str]], fmt: str, output: str | os.PathLike[str],
                  options: ImportOptions | None = None, *,
                  flows: str | os.PathLike[str] | pa.Table | None = None) -> MatchReport:
    """Read ``paths`` in format ``fmt``, write the rules CSV ``output`` and ``<output stem>.match.json``.

    With ``flows`` (a flows table), the report says how the records matched its flows. Files that
    cannot be read are listed in the report (``failed``) and the rest is imported; when none can
    be read, the first error is raised and nothing is written.
    """
    options = options or ImportOptions()
    table = None if flows is None else read_flow_keys(flows)  # a wrong flows table fails before any write
    files, failed = read_ground_truth(list(paths), fmt, options)
    if not files:
        more = f" (and {len(failed) - 1} more file(s) failed)" if len(failed) > 1 else ""
        raise GroundTruthFormatError(failed[0]["error"] + more)
    for failure in failed:
        log.error("%s", failure["error"])
    records = [r for f in files for r in f.records]
    rows, conflicts = build_rules(records, options.default_label, options.default_family)
    rules_path = write_rules(rows, output)
    report = MatchReport(fmt, options, rules_path, files, failed, records, len(rows), conflicts)
    if table is not None:
        return report.with_flows(table, None if isinstance(flows, pa.Table) else os.fspath(flows))
    report.write()
    return report


__all__ = [
    "LABEL_FORMATS",
    "Conflict",
    "FileResult",
    "ImportOptions",
    "MatchReport",
    "Record",
    "import_labels",
    "read_ground_truth",
    "report_path_for",
    "rules_path_for",
]
