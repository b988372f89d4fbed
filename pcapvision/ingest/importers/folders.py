"""Class-per-folder layouts (``SRC/Benign/Facetime.pcap``, ``SRC/Malware/Tinba.pcap``) -> records.

SRC is a directory; every capture below it (found as ``ingest`` finds them) is one record. Its
class is the path component ``--class-level N`` below SRC (1 = the first directory), or the first
group of ``--class-regex`` searched in the path relative to SRC (``/`` separators). The class becomes
the family; the label comes from ``--class-map`` (a CSV with columns ``class`` and ``label``), else
from a well-known name (malware, malicious, attack, botnet -> malicious; benign, normal -> normal)
of the class or of a directory between SRC and it. A class left without a label is an error that
lists every such class. Records carry file globs that match the capture whether SRC was given to
``ingest`` as a path prefix or ``ingest`` ran inside SRC.
"""

from __future__ import annotations

import glob
import hashlib
import re
from pathlib import Path

from pcapvision.errors import GroundTruthFormatError, ParameterError
from pcapvision.ingest.importers.records import (
    FileResult,
    ImportOptions,
    Record,
    fail,
    label_from_word,
    side_table_rows,
)
from pcapvision.ingest.discover import discover_captures


def read_class_map(path: str | Path) -> dict[str, str]:
    """``class -> label`` from a CSV with columns ``class`` and ``label`` (class names compare case-insensitively)."""
    out = {}
    for line, row in side_table_rows(path, "class map", ("class", "label")):
        if not row["label"]:
            raise fail(Path(path), line, "empty label")
        out[row["class"].lower()] = label_from_word(row["label"]) or row["label"]
    return out


def _class_of(relative: Path, options: ImportOptions, pattern: re.Pattern[str] | None) -> tuple[str, int] | None:
    """(class, index of its path component) of a capture path relative to SRC, or None."""
    parts = relative.parts
    if pattern is not None:
        match = pattern.search(relative.as_posix())
        if match is None:
            return None
        name = match.group("class") if "class" in pattern.groupindex else match.group(1 if pattern.groups else 0)
        index = next((i for i, p in enumerate(parts[:-1]) if p == name), len(parts) - 1)
        return name, index
    level = options.class_level or 1
    if level > len(parts) - 1:
        return None
    return parts[level - 1], level - 1


def read(path: Path, options: ImportOptions) -> FileResult:
    if not path.is_dir():
        raise ParameterError(f"The 'folders' format reads a directory of class folders. Got {str(path)!r} instead.")
    pattern = None if options.class_regex is None else re.compile(options.class_regex)  # validated
    class_map = read_class_map(options.class_map) if options.class_map else {}
    captures = discover_captures([path])
    digest = hashlib.sha256()
    result = FileResult(str(path), "")
    unlabeled: dict[str, str] = {}
    for capture in captures:
        relative = capture.relative_to(path)
        digest.update(relative.as_posix().encode() + b"\n")
        result.rows += 1
        found = _class_of(relative, options, pattern)
        if found is None:
            result.skip("no_class_in_path")
            continue
        name, index = found
        label = class_map.get(name.lower()) or label_from_word(name)
        if label is None:
            label = next((label_from_word(p) for p in relative.parts[:index] if label_from_word(p)), None)
        if label is None:
            unlabeled.setdefault(name, relative.as_posix())
            continue
        rel = glob.escape(relative.as_posix())
        result.records.append(Record(relative.as_posix(), label, name, file_globs=(rel, f"*/{rel}")))
    if unlabeled:
        listed = ", ".join(f"{n!r} (e.g. {p})" for n, p in sorted(unlabeled.items()))
        raise GroundTruthFormatError(f"{path}: no label for class {listed}; give a class map (--class-map) "
                                     "or use malware/malicious/attack/botnet/benign/normal directory names")
    result.sha256 = digest.hexdigest()
    if options.class_map:
        result.notes.append(f"class map {options.class_map}")
    return result
