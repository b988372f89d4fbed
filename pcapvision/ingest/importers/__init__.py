"""Label importers: other tools' ground truth -> a label rules CSV, with a match report.

    >>> from pcapvision.ingest.importers import ImportOptions, import_labels
    >>> report = import_labels(["Friday.pcap_ISCX.csv"], "cicflowmeter", "rules.csv",
    ...                        ImportOptions(tz="America/Halifax"), flows="flows.parquet")
    >>> print(report.format())          # also written to rules.match.json

Formats (one module each): :mod:`.cicflowmeter`, :mod:`.binetflow`, :mod:`.zeek`, :mod:`.suricata`,
:mod:`.folders`; :mod:`.records` (the common record, options, parsing), :mod:`.rules` (records ->
rules, conflicts), :mod:`.matcher` (records x flows), :mod:`.report` (the match report).
Described in docs/ingest-labels.md.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from pathlib import Path

import pyarrow as pa

from pcapvision.errors import GroundTruthFormatError, InputNotFoundError, ParameterError, PcapvisionError
from pcapvision.ingest.importers import binetflow, cicflowmeter, folders, suricata, zeek
from pcapvision.ingest.importers.matcher import read_flow_keys
from pcapvision.ingest.importers.records import FileResult, ImportOptions, Record
from pcapvision.ingest.importers.report import MatchReport, report_path_for
from pcapvision.ingest.importers.rules import Conflict, build_rules, write_rules
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


def rules_path_for(flows_output: str | os.PathLike[str]) -> Path:
    """Where ``ingest --labels-format`` writes the imported rules: ``out/flows.parquet`` or the
    dataset directory ``out/flows`` -> ``out/flows.rules.csv`` (beside the flows, never inside)."""
    path = Path(flows_output)
    stem = path.stem if path.suffix == ".parquet" else path.name
    return path.with_name(stem + ".rules.csv")


def read_ground_truth(paths: list[str | os.PathLike[str]], fmt: str,
                      options: ImportOptions | None = None) -> tuple[list[FileResult], list[dict[str, str]]]:
    """Read every file; a bad file is logged and listed in the failures, the others go on."""
    check_choice("format", fmt, LABEL_FORMATS)
    options = options or ImportOptions()
    results, failed = [], []
    for path in _expand(paths):
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


def _expand(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Paths as given; a pattern that names no file (quoted on the command line) is expanded."""
    out = []
    for raw in paths:
        text = os.fspath(raw)
        matches = sorted(glob.glob(text)) if not os.path.exists(text) and set("*?[") & set(text) else []
        if matches:
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(text))  # read_ground_truth reports it missing
    return out


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
