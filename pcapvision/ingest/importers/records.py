"""What every importer produces: ground-truth records, the options they read, shared parsing.

A :class:`Record` is one row of somebody else's ground truth reduced to what matching needs: an
(undirected) 5-tuple and the time windows in which a pcapvision flow of that 5-tuple may start
(``first_seen_ns``), or, for per-file classes, file globs. ``label`` is ``None`` for records the
dataset itself leaves unlabelled (CTU-13 ``Background``): they are counted, never turned into rules.
"""

from __future__ import annotations

import csv
import functools
import io
import ipaddress
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pcapvision.errors import GroundTruthFormatError, InputNotFoundError, ParameterError
from pcapvision.validation import check_choice, check_int, check_number

log = logging.getLogger(__name__)

MALICIOUS, NORMAL = "malicious", "normal"
PROTOCOLS = {"tcp": 6, "udp": 17, "6": 6, "17": 17}
CLOCKS = ("auto", "24", "12")
SECOND_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Well-known class names (lower case) and the label they stand for.
WELL_KNOWN_LABELS = {
    "malware": MALICIOUS, "malicious": MALICIOUS, "attack": MALICIOUS, "attacks": MALICIOUS,
    "botnet": MALICIOUS, "benign": NORMAL, "normal": NORMAL,
}


@dataclass(frozen=True, slots=True)
class Window:
    """Flow start times ``[from_ns, to_ns)`` a record accepts; ``note`` names the reading
    (``am``/``pm`` for a 12-hour clock without AM/PM, else empty)."""

    from_ns: int
    to_ns: int
    note: str = ""


@dataclass(frozen=True, slots=True)  # millions of them for a whole dataset
class Record:
    """One ground-truth record (see the module docstring). ``source`` is ``FILE:LINE``."""

    source: str
    label: str | None
    family: str | None
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    protocol: int | None = None
    windows: tuple[Window, ...] = ()
    community_id: str | None = None
    file_globs: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[tuple[str, int], tuple[str, int], int] | None:
        """The undirected 5-tuple: endpoints in sorted order (what Community ID hashes)."""
        if self.src_ip is None:
            return None
        a, b = (self.src_ip, self.src_port), (self.dst_ip, self.dst_port)
        return (a, b, self.protocol) if a <= b else (b, a, self.protocol)


@dataclass
class FileResult:
    """The records read from one ground-truth file and the rows skipped, by reason."""

    path: str
    sha256: str
    records: list[Record] = field(default_factory=list)
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def to_dict(self) -> dict[str, Any]:
        labels = Counter(r.label or "unlabeled" for r in self.records)
        return {"path": self.path, "sha256": self.sha256, "rows": self.rows, "records": len(self.records),
                "records_by_label": dict(sorted(labels.items())), "skipped": dict(sorted(self.skipped.items())),
                "notes": self.notes}


@dataclass(frozen=True)
class ImportOptions:
    """Options of every format, validated here (each format reads the ones it needs).

    ``tz``: zone of naive timestamps (cicflowmeter, binetflow); ``time_slack_s``: tolerance added
    on both sides of every window; ``clock``: cicflowmeter hours, ``auto`` (12-hour without AM/PM
    when no hour of the file is above 12 or 0), ``24`` or ``12``; ``min_severity``: suricata alerts
    kept (severity number <= it; 1 is the most severe); ``default_label``: a last catch-all rule;
    ``uid_labels``: zeek labels from a CSV keyed by ``uid``; ``class_level`` / ``class_regex`` /
    ``class_map``: folders.
    """

    tz: str = "UTC"
    time_slack_s: float = 1.0
    clock: str = "auto"
    min_severity: int | None = None
    default_label: str | None = None
    default_family: str | None = None
    uid_labels: str | None = None
    class_level: int | None = None
    class_regex: str | None = None
    class_map: str | None = None

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ParameterError(f"The 'tz' parameter must be an IANA time zone such as 'UTC' or "
                                 f"'America/Halifax'. Got {self.tz!r} instead.") from None
        check_number("time_slack_s", self.time_slack_s, min_value=0.0)
        if math.isinf(self.time_slack_s):
            raise ParameterError(f"The 'time_slack_s' parameter must be finite. Got {self.time_slack_s!r} instead.")
        check_choice("clock", self.clock, CLOCKS)
        if self.min_severity is not None:
            check_int("min_severity", self.min_severity, min_value=1, max_value=255)
        if self.class_level is not None:
            check_int("class_level", self.class_level, min_value=1)
        if self.class_regex is not None:
            try:
                re.compile(self.class_regex)
            except (re.error, TypeError) as exc:
                raise ParameterError(f"The 'class_regex' parameter must be a regular expression. "
                                     f"Got {self.class_regex!r} instead ({exc}).") from None
        if self.class_level is not None and self.class_regex is not None:
            raise ParameterError("The 'class_level' and 'class_regex' parameters cannot be combined. "
                                 "Got both instead.")
        for name in ("default_label", "default_family"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ParameterError(f"The '{name}' parameter must be a non-empty str. Got {value!r} instead.")
        if self.default_family is not None and self.default_label is None:
            raise ParameterError("The 'default_family' parameter needs a 'default_label'. Got no default label.")

    @property
    def slack_ns(self) -> int:
        return round(self.time_slack_s * SECOND_NS)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# --- shared parsing -----------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """A ground-truth file's text: UTF-8 (BOM allowed), else Windows-1252 with a note in the log
    (CIC-IDS2017 writes 'Web Attack \\x96 Brute Force' with a cp1252 dash)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.info("%s: not UTF-8; read as Windows-1252", path)
        return data.decode("cp1252", errors="replace")


def csv_rows(text: str) -> csv.reader:
    return csv.reader(io.StringIO(text, newline=""))


def side_table_rows(path: str | Path, what: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: stripped cell})`` of a small CSV beside the ground truth (a uid labels file,
    a class map); header names compare case-insensitively, blank lines are skipped, and a missing
    file, a missing required column or a row of the wrong width is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: {what} file not found")
    rows = csv_rows(read_text(path))
    header = [h.strip().lower() for h in next(rows, [])]
    if any(c not in header for c in required):
        raise fail(path, 1, f"a {what} CSV needs {' and '.join(repr(c) for c in required)} columns")
    for cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise fail(path, rows.line_num, f"{len(cells)} cells, the header has {len(header)}")
        yield rows.line_num, {h: c.strip() for h, c in zip(header, cells)}


@functools.lru_cache(maxsize=1 << 16)
def canonical_ip(text: str) -> str:
    """Dotted IPv4 (also for IPv4-mapped IPv6) or compressed IPv6, as flows tables write them."""
    ip = ipaddress.ip_address(text.strip())
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_port(text: str) -> int:
    """A decimal port, or hexadecimal with ``0x`` (Argus writes some so)."""
    text = text.strip()
    value = int(text, 16) if text.lower().startswith("0x") else int(float(text)) if "." in text else int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port {text!r} out of range")
    return value


def local_ns(moment: datetime, options: ImportOptions) -> int:
    """A naive (local) or aware datetime as ns since the epoch; naive ones are in ``options.tz``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=options.zone)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * SECOND_NS + delta.microseconds * 1000


def label_from_word(word: str) -> str | None:
    """``malicious``/``normal`` for a well-known class name, else ``None``."""
    return WELL_KNOWN_LABELS.get(word.strip().lower())


def fail(path: Path | str, line: int | None, problem: str) -> GroundTruthFormatError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return GroundTruthFormatError(f"{where}: {problem}")
