"""Argus ``.binetflow`` files (CTU-13, Stratosphere) -> records.

Columns used: ``StartTime`` (``yyyy/mm/dd hh:mm:ss.ffffff``, local time of the capture: ``--tz``),
``Dur`` (s), ``Proto``, ``SrcAddr``, ``Sport``, ``DstAddr``, ``Dport``, ``Label``. Labels:
``From-Botnet`` -> malicious (family: the label without ``flow=``), ``From-Normal`` -> normal,
``Background`` (and anything else) -> unlabeled, counted but not turned into rules. Ports written in
hexadecimal (``0x0303``) are read; ICMP/ARP rows and rows without ports are skipped by reason. ``Dir``
(``->``, ``<->``, ``<-``) is not needed: records match a flow in either direction.
"""

from __future__ import annotations

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

COLUMNS = ("starttime", "dur", "proto", "srcaddr", "sport", "dstaddr", "dport", "label")
_TIME_FORMATS = ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")


def label_of(text: str) -> tuple[str | None, str | None]:
    """(label, family) of an Argus/CTU-13 label such as ``flow=From-Botnet-V42-TCP-CC6``."""
    name = text.strip()
    name = name[len("flow="):] if name.lower().startswith("flow=") else name
    lower = name.lower()
    if "botnet" in lower:
        return MALICIOUS, name
    if "normal" in lower:
        return NORMAL, None
    return None, None  # Background and anything unknown: unlabeled


def _parse_time(text: str) -> datetime:
    text = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(text)


def read(path: Path, options: ImportOptions) -> FileResult:
    result = FileResult(str(path), sha256_file(path))
    rows = csv_rows(read_text(path))
    header = next(rows, None)
    if header is None:
        raise fail(path, None, "empty file (expected a binetflow header)")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise fail(path, 1, f"no {missing[0]!r} column; not an Argus binetflow file "
                            f"(needs {', '.join(COLUMNS)})")
    col = {c: names.index(c) for c in COLUMNS}
    width = max(col.values()) + 1
    for cells in rows:
        line = rows.line_num
        result.rows += 1
        if not any(c.strip() for c in cells):
            result.skip("blank_row")
            continue
        if len(cells) < width:
            raise fail(path, line, f"{len(cells)} cells, the columns used need {width}")
        protocol = PROTOCOLS.get(cells[col["proto"]].strip().lower())
        if protocol is None:
            result.skip("not_tcp_udp")
            continue
        if not cells[col["sport"]].strip() or not cells[col["dport"]].strip():
            result.skip("no_ports")
            continue
        label, family = label_of(cells[col["label"]])
        try:
            src, dst = canonical_ip(cells[col["srcaddr"]]), canonical_ip(cells[col["dstaddr"]])
            sport, dport = parse_port(cells[col["sport"]]), parse_port(cells[col["dport"]])
        except ValueError as exc:
            raise fail(path, line, f"bad address or port ({exc})") from None
        try:
            start = local_ns(_parse_time(cells[col["starttime"]]), options)
        except ValueError:
            raise fail(path, line, f"column 'StartTime': {cells[col['starttime']]!r} is not "
                                   "yyyy/mm/dd hh:mm:ss[.ffffff]") from None
        try:
            duration_s = max(float(cells[col["dur"]] or 0), 0.0)
        except ValueError:
            raise fail(path, line, f"column 'Dur': {cells[col['dur']]!r} is not a number") from None
        window = Window(start - options.slack_ns, start + round(duration_s * SECOND_NS) + 1000 + options.slack_ns)
        result.records.append(Record(f"{path.name}:{line}", label, family, src, dst, sport, dport, protocol,
                                     (window,)))
    return result
