"""Zeek ``conn.log`` (TSV with a ``#fields`` header, or JSON lines) -> records.

Times and the 5-tuple come from the log (``ts``, ``duration``, ``id.orig_h``, ``id.orig_p``,
``id.resp_h``, ``id.resp_p``, ``proto``); the label from the log's own ``label`` and
``detailed-label`` columns (IoT-23 ``conn.log.labeled``: ``Malicious`` / ``Benign``, family = the
detailed label unless ``-``), or from a separate CSV joined on ``uid`` (``--uid-labels``, columns
``uid``, ``label`` and optionally ``family`` or ``detailed-label``). Trap handled: IoT-23 separates
its last three columns (``tunnel_parents label detailed-label``) by spaces, not tabs.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pcapvision.io import sha256_file
from pcapvision.ingest.importers.records import (
    PROTOCOLS,
    SECOND_NS,
    FileResult,
    ImportOptions,
    Record,
    Window,
    canonical_ip,
    fail,
    label_from_word,
    local_ns,
    parse_port,
    read_text,
    side_table_rows,
)

NEEDED = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
_UNSET = {"-", "", "(empty)"}


def read_uid_labels(path: str | Path) -> dict[str, tuple[str, str | None]]:
    """``uid -> (label, family)`` from a CSV with columns ``uid``, ``label`` [, ``family`` | ``detailed-label``]."""
    out = {}
    for _, row in side_table_rows(path, "uid labels", ("uid", "label")):
        family = row.get("family", row.get("detailed-label", ""))
        out[row["uid"]] = (row["label"], None if family in _UNSET else family)
    return out


def _tsv_rows(text: str, path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    separator = "\t"
    fields: list[str] | None = None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#separator"):
            token = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else "\\x09"
            separator = token.encode().decode("unicode_escape")
            continue
        if line.startswith("#fields"):
            names = line.split(separator)[1:]
            # IoT-23: 'tunnel_parents   label   detailed-label' arrives as one tab-separated field.
            fields = [part for name in names for part in name.split()]
            spaced = len(fields) - len(names)
            continue
        if line.startswith("#") or not line.strip():
            continue
        if fields is None:
            raise fail(path, line_no, "data before the '#fields' header; not a Zeek TSV log")
        cells = line.split(separator)
        if len(cells) < len(fields) and spaced:
            cells = cells[:-1] + cells[-1].split(None, spaced)
        if len(cells) != len(fields):
            raise fail(path, line_no, f"{len(cells)} cells, '#fields' names {len(fields)}")
        rows.append((line_no, dict(zip(fields, cells))))
    if fields is None:
        raise fail(path, None, "no '#fields' header; not a Zeek TSV log")
    return fields, rows


def _json_rows(text: str, path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows = []
    fields: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(path, line_no, f"not a JSON object ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise fail(path, line_no, "not a JSON object")
        fields.update(obj)
        rows.append((line_no, obj))
    return sorted(fields), rows


def _time_ns(value: Any, options: ImportOptions) -> int:
    if isinstance(value, (int, float)):
        return round(float(value) * 1e6) * 1000
    text = str(value).strip()
    try:
        return round(float(text) * 1e6) * 1000
    except ValueError:
        return local_ns(datetime.fromisoformat(text.replace("Z", "+00:00")), options)


def read(path: Path, options: ImportOptions) -> FileResult:
    result = FileResult(str(path), sha256_file(path))
    text = read_text(path)
    fields, rows = (_json_rows if text.lstrip().startswith("{") else _tsv_rows)(text, path)
    missing = [f for f in NEEDED if f not in fields]
    if missing and rows:
        raise fail(path, None, f"no {missing[0]!r} field; not a Zeek conn.log")
    uid_labels = read_uid_labels(options.uid_labels) if options.uid_labels else None
    if uid_labels is None and "label" not in fields and rows:
        raise fail(path, None, "no 'label' field (IoT-23 conn.log.labeled); give the labels as a CSV keyed "
                               "by uid (--uid-labels)")
    seen_uids = set()
    for line_no, row in rows:
        result.rows += 1
        uid = str(row["uid"])
        seen_uids.add(uid)
        protocol = PROTOCOLS.get(str(row.get("proto", "")).strip().lower())
        if protocol is None:
            result.skip("not_tcp_udp")
            continue
        if uid_labels is not None:
            if uid not in uid_labels:
                result.skip("uid_not_in_labels")
                continue
            label_text, family = uid_labels[uid]
        else:
            label_text = str(row.get("label", "")).strip()
            detail = str(row.get("detailed-label", "-")).strip()
            family = None if detail in _UNSET else detail
        if label_text in _UNSET:
            result.skip("no_label")
            continue
        label = label_from_word(label_text) or label_text
        try:
            src, dst = canonical_ip(str(row["id.orig_h"])), canonical_ip(str(row["id.resp_h"]))
            sport, dport = parse_port(str(row["id.orig_p"])), parse_port(str(row["id.resp_p"]))
            start = _time_ns(row["ts"], options)
            duration = row.get("duration")
            duration_s = 0.0 if duration is None or str(duration).strip() in _UNSET else max(float(duration), 0.0)
        except ValueError as exc:
            raise fail(path, line_no, f"bad address, port or time ({exc})") from None
        window = Window(start - options.slack_ns, start + round(duration_s * SECOND_NS) + 1000 + options.slack_ns)
        result.records.append(Record(f"{path.name}:{line_no}", label, family,
                                     src, dst, sport, dport, protocol, (window,)))
    if uid_labels is not None:
        orphans = len(set(uid_labels) - seen_uids)
        if orphans:
            result.notes.append(f"{orphans} uid(s) of {options.uid_labels} not in this conn.log")
    return result
