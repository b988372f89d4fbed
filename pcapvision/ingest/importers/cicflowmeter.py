"""CICFlowMeter CSVs (CIC-IDS2017, CSE-CIC-IDS2018) -> records.

Traps handled: header names with leading spaces (``' Source IP'``) and the 2018 short names
(``Src IP``); the header repeated inside the data; blank rows; Windows-1252 bytes in labels;
``dd/mm/yyyy h:mm`` timestamps in the capture site's local time (``--tz``) on a 12-hour clock
without AM/PM (both readings become windows; the match report says which one matched); minute
resolution (the window spans the whole minute); negative ``Flow Duration`` (taken as 0).
``BENIGN`` -> normal; any other label -> malicious with the label kept as the family.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from pcapvision.io import sha256_file
from pcapvision.ingest.importers.records import (
    MALICIOUS,
    NORMAL,
    PROTOCOLS,
    SECOND_NS,
    FileResult,
    ImportOptions,
    Record,
    Window,
    canonical_ip,
    csv_rows,
    fail,
    local_ns,
    parse_port,
    read_text,
)

COLUMNS = {  # as CIC-IDS2017 / CSE-CIC-IDS2018 spell them; compared stripped and case-insensitively
    "src_ip": ("Source IP", "Src IP"),
    "src_port": ("Source Port", "Src Port"),
    "dst_ip": ("Destination IP", "Dst IP"),
    "dst_port": ("Destination Port", "Dst Port"),
    "protocol": ("Protocol",),
    "timestamp": ("Timestamp",),
    "duration": ("Flow Duration",),
    "label": ("Label",),
}
_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?(?:\s*([AaPp])\.?[Mm]\.?)?$")


def _columns(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    found = {}
    for key, aliases in COLUMNS.items():
        index = next((names.index(a.lower()) for a in aliases if a.lower() in names), None)
        if index is None:
            raise fail(path, 1, f"no {' / '.join(repr(a) for a in aliases)} column; "
                                f"not a CICFlowMeter CSV with addresses (header: {', '.join(header[:8])}...)")
        found[key] = index
    return found


def _parse_time(text: str) -> tuple[datetime, int, bool, bool]:
    """(time, resolution ns, has AM/PM, 24-hour evidence) of a CICFlowMeter timestamp."""
    match = _DMY.match(text.strip())
    if match is None:
        moment = datetime.fromisoformat(text.strip())
        return moment, SECOND_NS, False, True
    day, month, year, hour, minute, second, fraction, ampm = match.groups()
    hour = int(hour)
    if ampm:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} with AM/PM")
        hour = hour % 12 + (12 if ampm.lower() == "p" else 0)
    micro = round(float(fraction) * 1e6) if fraction else 0
    moment = datetime(int(year), int(month), int(day), hour, int(minute), int(second or 0), micro)
    resolution = 60 * SECOND_NS if second is None else SECOND_NS
    return moment, resolution, bool(ampm), hour == 0 or hour > 12


def read(path: Path, options: ImportOptions) -> FileResult:
    result = FileResult(str(path), sha256_file(path))
    rows = csv_rows(read_text(path))
    header = next(rows, None)
    if header is None:
        raise fail(path, None, "empty file (expected a CICFlowMeter CSV header)")
    col = _columns(header, path)
    width = max(col.values()) + 1
    parsed = []
    times: dict[str, tuple[datetime, int, bool, bool]] = {}  # timestamps repeat (minute resolution)
    has_ampm = evidence_24h = False
    for cells in rows:
        line = rows.line_num
        result.rows += 1
        if not any(c.strip() for c in cells):
            result.skip("blank_row")
            continue
        if cells == header:
            result.skip("repeated_header")
            continue
        if len(cells) < width:
            raise fail(path, line, f"{len(cells)} cells, the columns used need {width}")
        label_text = cells[col["label"]].strip()
        if not label_text:
            result.skip("no_label")
            continue
        protocol = PROTOCOLS.get(cells[col["protocol"]].strip().lower())
        if protocol is None:
            result.skip("not_tcp_udp")
            continue
        try:
            src, dst = canonical_ip(cells[col["src_ip"]]), canonical_ip(cells[col["dst_ip"]])
            sport, dport = parse_port(cells[col["src_port"]]), parse_port(cells[col["dst_port"]])
        except ValueError as exc:
            raise fail(path, line, f"bad address or port ({exc})") from None
        stamp = cells[col["timestamp"]]
        if stamp not in times:
            try:
                times[stamp] = _parse_time(stamp)
            except ValueError:
                raise fail(path, line, f"column 'Timestamp': {stamp!r} is not "
                                       "dd/mm/yyyy h:mm[:ss] [AM|PM] or ISO-8601") from None
        moment, resolution, ampm, is_24h = times[stamp]
        has_ampm |= ampm
        evidence_24h |= is_24h
        try:
            duration_us = float(cells[col["duration"]] or 0)
        except ValueError:
            raise fail(path, line, f"column 'Flow Duration': {cells[col['duration']]!r} is not a number") from None
        if duration_us < 0:
            result.skip("negative_duration_taken_as_0")  # counted, the record is still kept
            duration_us = 0.0
        parsed.append((line, label_text, src, dst, sport, dport, protocol, moment, resolution, duration_us))
    twelve_hour = options.clock == "12" or (options.clock == "auto" and not has_ampm and not evidence_24h)
    if twelve_hour and parsed:
        result.notes.append("12-hour clock without AM/PM: each record gets an am and a pm window")
    starts: dict[datetime, list[tuple[int, str]]] = {}
    for line, label_text, src, dst, sport, dport, protocol, moment, resolution, duration_us in parsed:
        benign = label_text.lower() == "benign"
        span = resolution + round(duration_us * 1000)
        if moment not in starts:
            starts[moment] = _starts(moment, twelve_hour, options)
        windows = tuple(Window(start - options.slack_ns, start + span + options.slack_ns, note)
                        for start, note in starts[moment])
        result.records.append(Record(f"{path.name}:{line}", NORMAL if benign else MALICIOUS,
                                     None if benign else label_text, src, dst, sport, dport, protocol, windows))
    return result


def _starts(moment: datetime, twelve_hour: bool, options: ImportOptions) -> list[tuple[int, str]]:
    if not twelve_hour:
        return [(local_ns(moment, options), "")]
    am = moment.replace(hour=moment.hour % 12)
    pm = moment.replace(hour=moment.hour % 12 + 12)
    return [(local_ns(am, options), "am"), (local_ns(pm, options), "pm")]
