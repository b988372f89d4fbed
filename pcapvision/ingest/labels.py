"""Flow labels: one label for every flow (``--label``) or a CSV of rules (``--labels rules.csv``).

A rules file is a CSV with a header; each row is a rule, an empty cell matches anything and the
first matching row wins (columns in ``docs/contracts.md``). Matching is vectorised over a batch of
flows with numpy; rules that pin an exact 5-tuple (the usual shape of machine-made label files,
one rule per flow) are looked up in a dict instead of being scanned, and match the flow in either
direction (which end a flow calls its initiator depends on what the capture saw first).
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import hashlib
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pcapvision.errors import InputNotFoundError, ParameterError
from pcapvision.ingest.arrays import repeated_string_array, string_array, to_numpy
from pcapvision.io import sha256_file
from pcapvision.validation import check_choice

log = logging.getLogger(__name__)

RULE_COLUMNS = (
    "label", "family", "rule_id", "file", "src_ip", "dst_ip", "ip", "src_port", "dst_port", "port",
    "protocol", "sni", "time_from", "time_to",
)
UNLABELED_CHOICES = ("keep", "drop")
SOURCE_LABEL = "--label"
SOURCE_DEFAULT = "--default-label"
_PROTOCOL_NAMES = {"tcp": 6, "udp": 17}
_U64 = (1 << 64) - 1


class LabelRulesError(ParameterError):
    """A label rules file cannot be parsed (a usage error: it names the file, line and column)."""


@dataclass(frozen=True)
class _Network:
    """An IP or CIDR as a masked 128-bit value in the IPv4-mapped IPv6 space, split in two uint64."""

    hi: int
    lo: int
    mask_hi: int
    mask_lo: int

    @classmethod
    @functools.lru_cache(maxsize=1 << 16)  # machine-made rule files repeat a few hosts many times
    def parse(cls, text: str) -> _Network:
        net = ipaddress.ip_network(text.strip(), strict=False)
        prefix = net.prefixlen
        value = int(net.network_address)
        if net.version == 4:
            value |= 0xFFFF << 32  # ::ffff:a.b.c.d, as flows store IPv4 addresses
            prefix += 96
        mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
        return cls(value >> 64, value & _U64, mask >> 64, mask & _U64)

    def matches(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return ((hi & np.uint64(self.mask_hi)) == np.uint64(self.hi)) & (
            (lo & np.uint64(self.mask_lo)) == np.uint64(self.lo)
        )

    @property
    def is_host(self) -> bool:
        return self.mask_hi == _U64 and self.mask_lo == _U64


@dataclass(frozen=True)
class LabelRule:
    """One parsed row of a rules file; ``None`` fields match anything."""

    line: int
    label: str
    family: str | None
    source: str
    file_glob: str | None = None
    src_net: _Network | None = None
    dst_net: _Network | None = None
    any_net: _Network | None = None
    src_ports: tuple[int, int] | None = None
    dst_ports: tuple[int, int] | None = None
    any_ports: tuple[int, int] | None = None
    protocol: int | None = None
    sni_glob: str | None = None
    time_from_ns: int | None = None
    time_to_ns: int | None = None
    exact_key: tuple[str, str, int, int, int] | None = None  # set when the rule pins a 5-tuple

    def matches_file(self, source_file: str) -> bool:
        if self.file_glob is None:
            return True
        return fnmatch.fnmatchcase(source_file, self.file_glob) or fnmatch.fnmatchcase(
            Path(source_file).name, self.file_glob
        )


class _FlowView:
    """The columns of a flows batch that rules look at, as numpy arrays (computed lazily)."""

    def __init__(self, batch: pa.RecordBatch | pa.Table):
        self.batch = batch
        self.n = batch.num_rows
        self._cache: dict[str, Any] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = to_numpy(self.batch.column(name))
        return self._cache[name]

    def address(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        key = f"{name}:addr"
        if key not in self._cache:
            # Few distinct addresses per batch: parse each once, then broadcast.
            uniques, inverse = np.unique(self.column(name).astype(str), return_inverse=True)
            hi = np.empty(len(uniques), np.uint64)
            lo = np.empty(len(uniques), np.uint64)
            for i, text in enumerate(uniques):
                net = _Network.parse(text)
                hi[i], lo[i] = net.hi, net.lo
            self._cache[key] = (hi[inverse], lo[inverse])
        return self._cache[key]

    def sni_matches(self, pattern: str) -> np.ndarray:
        values = self.column("tls_sni")
        present = np.array([v is not None for v in values], bool)
        out = np.zeros(self.n, bool)
        if present.any():
            uniques, inverse = np.unique(values[present].astype(str), return_inverse=True)
            hits = np.array([fnmatch.fnmatchcase(u.lower(), pattern) for u in uniques], bool)
            out[present] = hits[inverse]
        return out

    def rows(self, names: tuple[str, ...]) -> list[tuple[Any, ...]]:
        return list(zip(*(self.batch.column(n).to_pylist() for n in names)))


def _in_range(values: np.ndarray, bounds: tuple[int, int]) -> np.ndarray:
    low, high = bounds
    if low == high:
        return values == low
    return (values >= low) & (values <= high)


class Labeler:
    """Assigns ``label``, ``family`` and ``label_source`` to the flows of a capture.

    Build one with :meth:`from_label` or :meth:`from_rules_csv`; :meth:`apply` labels a batch.
    Instances are picklable (worker processes receive them).
    """

    def __init__(
        self,
        rules: list[LabelRule] | None = None,
        *,
        label: str | None = None,
        family: str | None = None,
        unlabeled: str = "keep",
        default_label: str | None = None,
        default_family: str | None = None,
        description: Mapping[str, Any] | None = None,
    ):
        self.rules = list(rules or [])
        self.label = label
        self.family = family
        self.unlabeled = check_choice("unlabeled", unlabeled, UNLABELED_CHOICES)
        self.default_label = default_label
        self.default_family = default_family
        self._description = dict(description or {})
        self._exact: dict[tuple[str, str, int, int, int], list[int]] = {}
        self._scanned: list[int] = []
        for index, rule in enumerate(self.rules):
            if rule.exact_key is not None:
                # Either direction: without a SYN the initiator is whoever sent first.
                src, dst, sport, dport, protocol = rule.exact_key
                for key in (rule.exact_key, (dst, src, dport, sport, protocol)):
                    indices = self._exact.setdefault(key, [])
                    if index not in indices:
                        indices.append(index)
            else:
                self._scanned.append(index)
        self._file_rules_cache: dict[str, tuple[list[int], set[int]]] = {}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_label(cls, name: str, family: str | None = None) -> Labeler:
        """Label every flow ``name`` (and ``family``); ``label_source`` is ``--label``."""
        if not isinstance(name, str) or not name.strip():
            raise ParameterError(f"The 'label' parameter must be a non-empty str. Got {name!r} instead.")
        if family is not None and (not isinstance(family, str) or not family.strip()):
            raise ParameterError(f"The 'family' parameter must be a non-empty str. Got {family!r} instead.")
        return cls(label=name, family=family, description={"label": name, "family": family})

    @classmethod
    def from_rules_csv(
        cls,
        path: str | Path,
        unlabeled: str = "keep",
        default_label: str | None = None,
        default_family: str | None = None,
    ) -> Labeler:
        """Label flows by the rules in the CSV file ``path`` (first match wins).

        Flows no rule matches get ``default_label``/``default_family`` when given, otherwise no
        label; ``unlabeled="drop"`` removes the flows left without a label.
        """
        check_choice("unlabeled", unlabeled, UNLABELED_CHOICES)
        if default_family is not None and default_label is None:
            raise ParameterError("The 'default_family' parameter needs a 'default_label'. Got no default label.")
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"{path}: label rules file not found")
        rules = parse_rules_csv(path)
        description = {
            "rules_file": str(path),
            "rules_sha256": sha256_file(path),
            "rules": len(rules),
            "unlabeled": unlabeled,
            "default_label": default_label,
            "default_family": default_family,
        }
        log.debug("%s: %d label rules (%d indexed by 5-tuple)", path, len(rules),
                  sum(r.exact_key is not None for r in rules))
        return cls(rules, unlabeled=unlabeled, default_label=default_label, default_family=default_family,
                   description=description)

    def to_dict(self) -> dict[str, Any]:
        """What defines this labelling, for schema metadata."""
        return dict(self._description)

    def sha256(self) -> str:
        """SHA-256 of what decides the labels: the rules file's content (not its path) and the
        options, or the ``--label``/``--family`` values. Equal hashes label every flow alike."""
        decisive = {k: v for k, v in self._description.items() if k != "rules_file"}
        text = json.dumps(decisive, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # --- application -------------------------------------------------------------------------
    def apply(self, batch: pa.RecordBatch, source_file: str) -> pa.RecordBatch:
        """Return ``batch`` with its ``label``, ``family``, ``label_source`` columns set.

        Rows left unlabeled are removed when ``unlabeled == "drop"``.
        """
        label, family, source = self.assign(batch, source_file)
        names = batch.schema.names
        columns = list(batch.columns)
        for name, values in (("label", label), ("family", family), ("label_source", source)):
            columns[names.index(name)] = values
        out = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
        if self.unlabeled == "drop":
            out = out.filter(label.is_valid())
        return out

    def assign(self, batch: pa.RecordBatch | pa.Table, source_file: str) -> tuple[pa.Array, pa.Array, pa.Array]:
        """The label, family and label_source string arrays for the rows of ``batch``."""
        n = batch.num_rows
        if self.label is not None:
            return (repeated_string_array(self.label, n), string_array([self.family] * n),
                    repeated_string_array(SOURCE_LABEL, n))
        best = self._first_matching_rule(batch, source_file)
        labels = np.array([r.label for r in self.rules] + [self.default_label], dtype=object)
        families = np.array([r.family for r in self.rules] + [self.default_family], dtype=object)
        sources = np.array([r.source for r in self.rules] + [SOURCE_DEFAULT if self.default_label else None],
                           dtype=object)
        return (string_array(labels[best].tolist()), string_array(families[best].tolist()),
                string_array(sources[best].tolist()))

    def _rules_for_file(self, source_file: str) -> tuple[list[int], set[int]]:
        # File globs are constant over a capture: evaluate them once per file.
        cached = self._file_rules_cache.get(source_file)
        if cached is None:
            scanned = [i for i in self._scanned if self.rules[i].matches_file(source_file)]
            exact = {i for ids in self._exact.values() for i in ids if self.rules[i].matches_file(source_file)}
            cached = self._file_rules_cache[source_file] = (scanned, exact)
        return cached

    def _first_matching_rule(self, batch: pa.RecordBatch | pa.Table, source_file: str) -> np.ndarray:
        """Index of the first rule matching each row (``len(rules)`` where none does)."""
        n_rules = len(self.rules)
        view = _FlowView(batch)
        best = np.full(view.n, n_rules, np.int64)
        if view.n == 0 or n_rules == 0:
            return best
        scanned, exact = self._rules_for_file(source_file)
        if exact:
            keys = view.rows(("src_ip", "dst_ip", "src_port", "dst_port", "protocol"))
            for row, key in enumerate(keys):
                for index in self._exact.get(key, ()):
                    if index in exact and self._row_matches_extra(self.rules[index], view, row):
                        best[row] = index
                        break
        for index in scanned:
            if index >= best.max():
                break  # every row already matched an earlier rule
            mask = self._mask(self.rules[index], view)
            best = np.where(mask & (best > index), index, best)
        return best

    @staticmethod
    def _mask(rule: LabelRule, view: _FlowView) -> np.ndarray:
        mask = np.ones(view.n, bool)
        if rule.protocol is not None:
            mask &= view.column("protocol") == rule.protocol
        if rule.src_ports is not None:
            mask &= _in_range(view.column("src_port"), rule.src_ports)
        if rule.dst_ports is not None:
            mask &= _in_range(view.column("dst_port"), rule.dst_ports)
        if rule.any_ports is not None:
            mask &= _in_range(view.column("src_port"), rule.any_ports) | _in_range(
                view.column("dst_port"), rule.any_ports)
        if rule.time_from_ns is not None:
            mask &= view.column("first_seen_ns") >= rule.time_from_ns
        if rule.time_to_ns is not None:
            mask &= view.column("first_seen_ns") < rule.time_to_ns
        for net, name in ((rule.src_net, "src_ip"), (rule.dst_net, "dst_ip")):
            if net is not None and mask.any():
                mask &= net.matches(*view.address(name))
        if rule.any_net is not None and mask.any():
            mask &= rule.any_net.matches(*view.address("src_ip")) | rule.any_net.matches(*view.address("dst_ip"))
        if rule.sni_glob is not None and mask.any():
            mask &= view.sni_matches(rule.sni_glob)
        return mask

    @staticmethod
    def _row_matches_extra(rule: LabelRule, view: _FlowView, row: int) -> bool:
        """Conditions of an exact 5-tuple rule beyond its key (file globs are checked per file)."""
        if rule.any_ports is not None and not (
            rule.any_ports[0] <= view.column("src_port")[row] <= rule.any_ports[1]
            or rule.any_ports[0] <= view.column("dst_port")[row] <= rule.any_ports[1]
        ):
            return False
        first_seen = view.column("first_seen_ns")[row]
        if rule.time_from_ns is not None and first_seen < rule.time_from_ns:
            return False
        if rule.time_to_ns is not None and first_seen >= rule.time_to_ns:
            return False
        if rule.any_net is not None:
            src_hi, src_lo = view.address("src_ip")
            dst_hi, dst_lo = view.address("dst_ip")
            hi = np.array([src_hi[row], dst_hi[row]])
            lo = np.array([src_lo[row], dst_lo[row]])
            if not rule.any_net.matches(hi, lo).any():
                return False
        if rule.sni_glob is not None:
            sni = view.column("tls_sni")[row]
            if sni is None or not fnmatch.fnmatchcase(str(sni).lower(), rule.sni_glob):
                return False
        return True


# --- parsing ---------------------------------------------------------------------------------
def parse_rules_csv(path: str | Path) -> list[LabelRule]:
    """Parse a label rules CSV; errors name the file, line and column in one line."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise LabelRulesError(f"{path}:1: empty rules file (expected a header row with a 'label' column)")
            header = [h.strip().lower() for h in header]
            for col, name in enumerate(header, start=1):
                if name not in RULE_COLUMNS:
                    raise LabelRulesError(
                        f"{path}:1: column {col} {name!r} is not a rule column (known: {', '.join(RULE_COLUMNS)})")
            if "label" not in header:
                raise LabelRulesError(f"{path}:1: the header has no 'label' column")
            duplicates = sorted({h for h in header if header.count(h) > 1})
            if duplicates:
                raise LabelRulesError(f"{path}:1: column {duplicates[0]!r} appears twice in the header")
            rules = []
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(cells) != len(header):
                    raise LabelRulesError(f"{path}:{line}: {len(cells)} cells, the header has {len(header)}")
                rules.append(_parse_rule(path, line, dict(zip(header, (c.strip() for c in cells)))))
    except UnicodeDecodeError as exc:
        raise LabelRulesError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise LabelRulesError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return rules


def _parse_rule(path: Path, line: int, cells: dict[str, str]) -> LabelRule:
    def value(name: str) -> str | None:
        text = cells.get(name, "")
        return text or None

    def fail(name: str, problem: str) -> LabelRulesError:
        return LabelRulesError(f"{path}:{line}: column {name!r}: {problem}")

    label = value("label")
    if label is None:
        raise fail("label", "is empty; every rule needs a label")

    fields: dict[str, Any] = {}
    for name, key in (("src_ip", "src_net"), ("dst_ip", "dst_net"), ("ip", "any_net")):
        text = value(name)
        if text is not None:
            try:
                fields[key] = _Network.parse(text)
            except ValueError:
                raise fail(name, f"{text!r} is not an IP address or CIDR") from None
    for name, key in (("src_port", "src_ports"), ("dst_port", "dst_ports"), ("port", "any_ports")):
        text = value(name)
        if text is not None:
            fields[key] = _parse_port_range(text, lambda problem, n=name: fail(n, problem))
    text = value("protocol")
    if text is not None:
        proto = _PROTOCOL_NAMES.get(text.lower())
        if proto is None:
            if not text.isdigit() or not 0 <= int(text) <= 255:
                raise fail("protocol", f"{text!r} is not tcp, udp or a protocol number in [0, 255]")
            proto = int(text)
        fields["protocol"] = proto
    for name, key in (("time_from", "time_from_ns"), ("time_to", "time_to_ns")):
        text = value(name)
        if text is not None:
            try:
                fields[key] = parse_time_ns(text)
            except ValueError:
                raise fail(name, f"{text!r} is not epoch seconds or an ISO-8601 time") from None
    if fields.get("time_from_ns") is not None and fields.get("time_to_ns") is not None \
            and fields["time_from_ns"] >= fields["time_to_ns"]:
        raise fail("time_to", "must be later than time_from")
    sni = value("sni")
    if sni is not None:
        fields["sni_glob"] = sni.lower()  # host names compare case-insensitively
    fields["file_glob"] = value("file")

    src, dst = fields.get("src_net"), fields.get("dst_net")
    sports, dports = fields.get("src_ports"), fields.get("dst_ports")
    if (src is not None and src.is_host and dst is not None and dst.is_host and sports and dports
            and sports[0] == sports[1] and dports[0] == dports[1] and fields.get("protocol") is not None):
        fields["exact_key"] = (_canonical_ip(cells["src_ip"]), _canonical_ip(cells["dst_ip"]), sports[0],
                               dports[0], fields["protocol"])
    return LabelRule(line=line, label=label, family=value("family"),
                     source=value("rule_id") or f"{path.name}:{line}", **fields)


def _parse_port_range(text: str, fail: Any) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        raise fail(f"{text!r} is not a port or a port range like 1024-65535") from None
    if not (0 <= low <= high <= 65535):
        raise fail(f"{text!r} is not a port or a port range within [0, 65535]")
    return low, high


@functools.lru_cache(maxsize=1 << 16)
def _canonical_ip(text: str) -> str:
    """The text form flows tables use: dotted IPv4 (also for IPv4-mapped IPv6) or compressed IPv6."""
    ip = ipaddress.ip_network(text.strip(), strict=False).network_address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_time_ns(text: str) -> int:
    """Epoch seconds (``1700000000.5``) or ISO-8601 (UTC when no zone is given) as ns since the epoch."""
    text = text.strip()
    try:
        seconds = Decimal(text)
    except InvalidOperation:
        seconds = None
    if seconds is not None:
        if not seconds.is_finite():
            raise ValueError(f"{text!r} is not a finite time")
        return int(seconds * 1_000_000_000)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
