"""The ingest pipeline: capture files -> flows table (Parquet), streamed, labelled, in parallel.

One capture flows through ``read_packets`` (chunks of decoded packets) -> ``assemble_flow_batches``
(Arrow batches of the flows that ended) -> batches bounded by :data:`OUTPUT_BATCH_FLOWS` flows and
:data:`OUTPUT_BATCH_BYTES` payload bytes, stamped with ``flow_id``/``source_*`` and labels. Memory is
bounded by the open flows plus one chunk, never a whole capture. :func:`ingest` runs that over many files (worker processes with ``jobs > 1``) into
one Parquet file or a dataset directory of one part per capture.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import gc
import glob
import hashlib
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pcapvision.console import progress
from pcapvision.errors import CaptureFormatError, InputNotFoundError, OutputWriteError, ParameterError, PcapvisionError
from pcapvision.ingest.assembler import FlowOptions, assemble_flow_batches
from pcapvision.ingest.flowschema import FLOW_SCHEMA_FIELDS
from pcapvision.ingest.labels import Labeler
from pcapvision.ingest.packets import IPV4_MAPPED_PREFIX, PacketBatch
from pcapvision.ingest.readers import read_packets
from pcapvision.io import (
    PARQUET_COMPRESSION,
    make_metadata,
    metadata_from_schema,
    printable,
    sha256_file,
    temp_path_beside,
    with_metadata,
    write_error,
)
from pcapvision.outputs import output_lock, remove_stale_temporaries, remove_stale_temporaries_in
from pcapvision.validation import check_choice, check_positive_int

log = logging.getLogger(__name__)

STAGE = "ingest"
READERS = ("auto", "dpkt", "scapy")
# Suffixes picked up when a directory is given (explicitly named files are read whatever their name).
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")
# A record batch (and Parquet row group) closes at this many flows or payload bytes, whichever
# comes first: 4096 flows of full 3 x 4 KiB payloads would hold ~100 MB in flight twice over.
OUTPUT_BATCH_FLOWS = 4096
OUTPUT_BATCH_BYTES = 8 << 20
_GLOB_CHARS = frozenset("*?[")
# What bad input raises while a capture is read (a failed file, exit code 1); anything else is a
# bug in pcapvision (an internal error, exit code 3, traceback shown).
INPUT_ERRORS = (PcapvisionError, OSError, EOFError)

# The flows-table contract (docs/contracts.md): the assembler's columns between the id and the
# provenance/label columns this module adds. Every field is nullable in the file.
FLOWS_SCHEMA = pa.schema([
    pa.field("flow_id", pa.string()),
    *(field.with_nullable(True) for field in FLOW_SCHEMA_FIELDS),
    pa.field("source_file", pa.string()),
    pa.field("source_sha256", pa.string()),
    pa.field("label", pa.string()),
    pa.field("family", pa.string()),
    pa.field("label_source", pa.string()),
])
"""The flows table's columns and exact types (``docs/contracts.md``)."""


# --- options and summary ---------------------------------------------------------------------
@dataclass(frozen=True)
class IngestOptions:
    """Flow assembly parameters plus how captures are read; validated on construction."""

    idle_timeout_s: float = 120.0
    active_timeout_s: float = 1800.0
    max_bytes: int = 4096
    max_packets: int = 64
    on_hole: str = "stop"
    reader: str = "auto"
    chunk_packets: int = 65536

    def __post_init__(self) -> None:
        # FlowOptions validates (and normalises) the flow parameters with the same messages.
        flow = self.flow_options()
        for name, value in flow.to_dict().items():
            object.__setattr__(self, name, value)
        check_choice("reader", self.reader, READERS)
        object.__setattr__(self, "chunk_packets", check_positive_int("chunk_packets", self.chunk_packets))

    def flow_options(self) -> FlowOptions:
        return FlowOptions(idle_timeout_s=self.idle_timeout_s, active_timeout_s=self.active_timeout_s,
                           max_bytes=self.max_bytes, max_packets=self.max_packets, on_hole=self.on_hole)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CaptureStats:
    """What reading one capture produced."""

    source_file: str
    source_sha256: str
    bytes_read: int = 0
    packets: int = 0
    flows: int = 0
    packets_skipped: Counter[str] = field(default_factory=Counter)
    frames_decoded_by: Counter[str] = field(default_factory=Counter)  # "fast", "dpkt", "scapy"
    tcp_flows_with_holes: int = 0  # flows with missed bytes (sequence space the capture never saw)
    tcp_missed_bytes: int = 0

    @property
    def packets_read(self) -> int:
        """Records read: the packets in flows plus the packets skipped (they add up)."""
        return self.packets + sum(self.packets_skipped.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["packets_read"] = self.packets_read
        out["packets_skipped"] = dict(sorted((+self.packets_skipped).items()))  # no zero counts
        out["frames_decoded_by"] = dict(sorted((+self.frames_decoded_by).items()))
        return out


@dataclass
class IngestSummary:
    """The outcome of :func:`ingest`."""

    output: str = ""
    files_ok: int = 0
    files_failed: list[tuple[str, str]] = field(default_factory=list)
    internal_errors: int = 0  # failures that are bugs, not bad input (among files_failed)
    files_skipped_already_ingested: int = 0
    files_reingested: int = 0  # dataset parts replaced: made with other parameters or labels
    packets: int = 0
    flows: int = 0
    packets_skipped: Counter[str] = field(default_factory=Counter)
    frames_decoded_by: Counter[str] = field(default_factory=Counter)
    tcp_flows_with_holes: int = 0
    tcp_missed_bytes: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    def add(self, stats: CaptureStats) -> None:
        self.files_ok += 1
        self.packets += stats.packets
        self.flows += stats.flows
        self.packets_skipped.update(stats.packets_skipped)
        self.frames_decoded_by.update(stats.frames_decoded_by)
        self.tcp_flows_with_holes += stats.tcp_flows_with_holes
        self.tcp_missed_bytes += stats.tcp_missed_bytes
        self.bytes_read += stats.bytes_read

    @property
    def packets_read(self) -> int:
        """Records read from the captures that succeeded: packets in flows plus packets skipped."""
        return self.packets + sum(self.packets_skipped.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files_failed"] = [list(f) for f in self.files_failed]
        out["packets_read"] = self.packets_read
        out["packets_skipped"] = dict(sorted((+self.packets_skipped).items()))  # no zero counts
        out["frames_decoded_by"] = dict(sorted((+self.frames_decoded_by).items()))
        return out

    def format(self) -> str:
        """A human-readable summary, one fact per line, failures one line each."""
        read = self.packets_read
        rate = read / self.seconds if self.seconds > 0 else 0.0
        reingested = f", {self.files_reingested} re-ingested (other parameters or labels)" \
            if self.files_reingested else ""
        lines = [
            f"output: {self.output}",
            f"files: {self.files_ok} ok{reingested}, {len(self.files_failed)} failed, "
            f"{self.files_skipped_already_ingested} skipped (already ingested)",
            f"packets read: {read:,} in {self.bytes_read / 1e6:,.1f} MB, {self.seconds:.2f} s "
            f"({rate:,.0f} packets/s)",
            f"packets in flows: {self.packets:,}",
        ]
        skipped = sum(self.packets_skipped.values())
        if skipped:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in (+self.packets_skipped).most_common())
            lines.append(f"packets skipped: {skipped:,} ({reasons})")
        else:
            lines.append("packets skipped: 0")
        lines.append(f"flows: {self.flows:,}")
        if self.tcp_flows_with_holes:
            lines.append(f"TCP holes: {self.tcp_flows_with_holes:,} flows missed {self.tcp_missed_bytes:,} bytes "
                         "(sequence space the capture never saw)")
        lines.extend(f"failed: {path}: {reason}" for path, reason in self.files_failed)
        if self.internal_errors:
            lines.append(f"{self.internal_errors} internal error(s): a bug in pcapvision, please report it "
                         "with the traceback above")
        return printable("\n".join(lines))


# --- input discovery -------------------------------------------------------------------------
def is_capture_name(path: str | Path) -> bool:
    """True when ``path`` has a capture suffix (what directory discovery picks up)."""
    return str(path).lower().endswith(CAPTURE_SUFFIXES)


def discover_captures(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, directories (recursively, capture suffixes only) and globs, in order.

    Raises :class:`InputNotFoundError` for a path or pattern that matches nothing, so a typo is
    never silently an empty run. Each file appears once, at its first mention.
    """
    found: list[Path] = []
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_captures_under(path))
        elif path.exists():  # a FIFO, socket or device: reading it could block or never end
            raise CaptureFormatError(f"{text}: not a regular file or directory ({_file_kind(path)}); give a capture file")
        elif _GLOB_CHARS & set(text):
            # Shells that do not expand globs (Windows, quoted arguments) pass them through.
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputNotFoundError(f"{text}: no file matches this pattern")
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    found.extend(_captures_under(m, required=False))
                elif m.is_file():
                    found.append(m)
        else:
            raise InputNotFoundError(f"{text}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        raise InputNotFoundError(f"{', '.join(map(os.fspath, paths))}: no capture files found")
    return unique


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _captures_under(directory: Path, *, required: bool = True) -> list[Path]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and is_capture_name(p))
    if not files and required:
        raise InputNotFoundError(
            f"{directory}: directory holds no capture files ({', '.join('*' + s for s in CAPTURE_SUFFIXES)})")
    return files


# --- one capture -> record batches -----------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def _packed(ip: str) -> bytes:
    # inet_pton is ~50x faster than ipaddress; the text comes from format_address, so it is valid.
    if ":" in ip:
        return socket.inet_pton(socket.AF_INET6, ip)
    return IPV4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, ip)


def flow_id(source_sha256: str, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: int,
            first_seen_ns: int, vlan_id: int = 0) -> str:
    """First 16 hex digits of SHA-256 over ``source_sha256``, the canonical 5-tuple, ``first_seen_ns``
    (and the VLAN id when there is one).

    The canonical 5-tuple orders the two endpoints by (16-byte address, port), as Community ID
    does, so the id does not depend on which end is the initiator. The hashed text is
    ``"{sha256}|{protocol}|{ip_a}|{port_a}|{ip_b}|{port_b}|{first_seen_ns}"``, followed by
    ``"|vlan{vlan_id}"`` for a tagged flow.
    """
    a, b = (_packed(src_ip), src_port, src_ip), (_packed(dst_ip), dst_port, dst_ip)
    if b[:2] < a[:2]:
        a, b = b, a
    text = f"{source_sha256}|{protocol}|{a[2]}|{a[1]}|{b[2]}|{b[1]}|{first_seen_ns}"
    if vlan_id:
        text += f"|vlan{vlan_id}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _flow_ids(flows: pa.RecordBatch, source_sha256: str) -> list[str]:
    """:func:`flow_id` of every flow of a batch (inlined: it runs once per flow)."""
    sha256 = hashlib.sha256
    ids = []
    for src, sport, dst, dport, protocol, first, vlan in zip(*(flows.column(name).to_pylist() for name in (
            "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "first_seen_ns", "vlan_id"))):
        if (_packed(dst), dport) < (_packed(src), sport):
            src, sport, dst, dport = dst, dport, src, sport
        text = f"{source_sha256}|{protocol}|{src}|{sport}|{dst}|{dport}|{first}"
        if vlan:
            text += f"|vlan{vlan}"
        ids.append(sha256(text.encode("ascii")).hexdigest()[:16])
    return ids


def _payload_bytes(batch: pa.RecordBatch) -> int:
    return sum(pc.sum(pc.binary_length(batch.column(name))).as_py() or 0
               for name in ("payload", "src2dst_payload", "dst2src_payload"))


def _rebatch(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Regroup the assembler's batches (one per packet chunk, of any size) into batches of at most
    :data:`OUTPUT_BATCH_FLOWS` flows or about :data:`OUTPUT_BATCH_BYTES` payload bytes."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    size = 0.0
    for batch in batches:
        n = batch.num_rows
        per_row = _payload_bytes(batch) / n if n else 0.0
        start = 0
        while start < n:
            room = OUTPUT_BATCH_FLOWS - rows
            if per_row:
                room = min(room, int((OUTPUT_BATCH_BYTES - size) / per_row))
            take = max(1, min(n - start, room))
            pending.append(batch.slice(start, take))
            rows += take
            size += take * per_row
            start += take
            if rows >= OUTPUT_BATCH_FLOWS or size >= OUTPUT_BATCH_BYTES:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, rows, size = [], 0, 0.0
    if pending:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _to_flows_schema(flows: pa.RecordBatch, source_file: str, source_sha256: str,
                     labeler: Labeler | None) -> pa.RecordBatch:
    """Add the pipeline's columns (ids, source, labels) to a batch of the assembler's flows."""
    n = flows.num_rows
    added = {
        "flow_id": pa.array(_flow_ids(flows, source_sha256), pa.string()),
        "source_file": pa.array([source_file] * n, pa.string()),
        "source_sha256": pa.array([source_sha256] * n, pa.string()),
        "label": pa.nulls(n, pa.string()),
        "family": pa.nulls(n, pa.string()),
        "label_source": pa.nulls(n, pa.string()),
    }
    columns = [added[f.name] if f.name in added else flows.column(f.name) for f in FLOWS_SCHEMA]
    batch = pa.RecordBatch.from_arrays(columns, schema=FLOWS_SCHEMA)
    if labeler is not None:
        batch = labeler.apply(batch, source_file)
    return batch


def iter_flow_tables(
    path: str | os.PathLike[str],
    options: IngestOptions | None = None,
    labeler: Labeler | None = None,
    *,
    source_file: str | None = None,
    source_sha256: str | None = None,
    stats: CaptureStats | None = None,
    on_chunk: Callable[[PacketBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the flows of one capture as record batches of :data:`FLOWS_SCHEMA` (no metadata).

    ``source_file`` defaults to ``path`` as given; ``stats``, when given, is filled in as the
    capture is read; ``on_chunk`` sees every packet chunk (progress bars).
    """
    options = options or IngestOptions()
    source_file = printable(os.fspath(path)) if source_file is None else source_file
    source_sha256 = source_sha256 or sha256_file(path)
    if stats is None:
        stats = CaptureStats(source_file, source_sha256)
    stats.bytes_read = os.path.getsize(path)

    def counted(batches: Iterable[PacketBatch]) -> Iterator[PacketBatch]:
        for batch in batches:
            stats.packets += len(batch)
            stats.packets_skipped.update(batch.skipped)
            stats.frames_decoded_by.update(batch.decoded_by)
            if on_chunk is not None:
                on_chunk(batch)
            yield batch

    packets = read_packets(path, reader=options.reader, chunk_packets=options.chunk_packets)
    flows_stream = assemble_flow_batches(counted(packets), options.flow_options(),
                                         flush_flows=OUTPUT_BATCH_FLOWS, flush_bytes=OUTPUT_BATCH_BYTES)
    for flows in _rebatch(flows_stream):
        missed = pc.add(flows.column("src2dst_missed_bytes"), flows.column("dst2src_missed_bytes"))
        stats.tcp_flows_with_holes += pc.sum(pc.greater(missed, 0)).as_py() or 0
        stats.tcp_missed_bytes += pc.sum(missed).as_py() or 0
        batch = _to_flows_schema(flows, source_file, source_sha256, labeler)
        stats.flows += batch.num_rows
        yield batch


@contextlib.contextmanager
def _untraced_heap() -> Iterator[None]:
    """Keep the objects alive now (modules, caches: ~70,000) out of the garbage collector's reach
    while a capture is read.

    Ingest allocates objects per flow, which triggers full collections, each traversing every
    object of the imported libraries: 15-20% of the assembler's CPU. Frozen objects that die
    meanwhile are collected after ``gc.unfreeze()``. Left alone when the caller froze objects
    already (unfreezing would undo that too).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def ingest_params(options: IngestOptions, labeler: Labeler | None) -> dict[str, Any]:
    """The parameters recorded in schema metadata (and compared to decide a part is up to date):
    the options, how labels were assigned, and ``labeler_sha256`` (:meth:`Labeler.sha256`, null
    without labels), which later stages fold into their fingerprints."""
    return {**options.to_dict(), "labels": labeler.to_dict() if labeler is not None else None,
            "labeler_sha256": labeler.sha256() if labeler is not None else None}


# Parameters that cannot change a part's rows (memory use only, or where the rules file lies:
# its content is in labeler_sha256): left out of a part's identity.
_NOT_IDENTITY = frozenset({"chunk_packets", "labels"})


def part_identity(params: Mapping[str, Any]) -> dict[str, Any]:
    """What makes a dataset part up to date besides its capture hash: the ingest parameters that
    shape its rows and the labeler hash."""
    return {k: v for k, v in params.items() if k not in _NOT_IDENTITY}


def read_flows(
    path: str | os.PathLike[str], options: IngestOptions | None = None, *, labeler: Labeler | None = None
) -> pa.Table:
    """One capture -> its flows table in memory, with pcapvision schema metadata."""
    options = options or IngestOptions()
    sha = sha256_file(path)
    stats = CaptureStats(printable(os.fspath(path)), sha)
    with _untraced_heap():
        batches = list(iter_flow_tables(path, options, labeler, source_sha256=sha, stats=stats))
    table = pa.Table.from_batches(batches, schema=FLOWS_SCHEMA)
    return with_metadata(table, make_metadata(STAGE, ingest_params(options, labeler), sources=[stats.to_dict()]))


# --- many captures -> Parquet ----------------------------------------------------------------
# Dictionary-encode only the columns with repeated values and keep min/max statistics only for
# scalars: hashing or comparing kilobytes of payload per row costs ~20% of the write for nothing.
_DICTIONARY_COLUMNS = ["src_ip", "dst_ip", "end_reason", "source_file", "source_sha256", "label", "family",
                       "label_source", "tls_sni", "tls_version", "tls_ja3", "tls_ja3_hash"]
_STATISTICS_COLUMNS = [f.name for f in FLOWS_SCHEMA if not (pa.types.is_binary(f.type) or pa.types.is_list(f.type))]


class FlowsWriter:
    """A flows Parquet file written through a temporary file beside it, capture by capture.

    Batches go straight to the file; :meth:`commit` marks the end of a capture, :meth:`rollback`
    drops what was written since (a capture that failed half-way), :meth:`close` stores the
    metadata and renames the file into place, :meth:`abort` removes it. The schema is stored as
    Parquet types only (``store_schema=False``: every FLOWS_SCHEMA type round-trips) so that the
    metadata, which counts what was read, can be written last.
    """

    def __init__(self, path: Path, compression: str = PARQUET_COMPRESSION):
        self.path = Path(path)
        self.compression = compression
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._committed_rows = 0
        self._pending_rows = 0

    def _open(self) -> None:
        self._tmp = temp_path_beside(self.path)
        self._writer = pq.ParquetWriter(self._tmp, FLOWS_SCHEMA, compression=self.compression, store_schema=False,
                                        use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS)

    def write(self, batch: pa.RecordBatch) -> None:
        with self._writing():
            if self._writer is None:
                self._open()
            if batch.num_rows:
                self._writer.write_batch(batch)
                self._pending_rows += batch.num_rows

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError while writing is the output's (disk full...), never the capture's fault."""
        try:
            yield
        except OutputWriteError:
            raise
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def commit(self) -> None:
        self._committed_rows += self._pending_rows
        self._pending_rows = 0

    def rollback(self) -> None:
        """Forget the rows written since the last commit (rare: rewrites the committed rows)."""
        if not self._pending_rows:
            return
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        broken = self._tmp
        self._open()
        left = self._committed_rows
        for batch in _row_groups(broken):
            if left <= 0:
                break
            self._writer.write_batch(batch.slice(0, left))
            left -= min(left, batch.num_rows)
        broken.unlink()
        self._pending_rows = 0

    def close(self, metadata: dict[str, Any]) -> Path:
        """Write the metadata, finish the file and rename it onto ``path``."""
        self.commit()
        with self._writing():
            if self._writer is None:
                self._open()
            encoded = with_metadata(FLOWS_SCHEMA.empty_table(), metadata).schema.metadata
            self._writer.add_key_value_metadata(encoded)
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def _row_groups(path: Path) -> Iterator[pa.RecordBatch]:
    """The rows of a Parquet file we wrote, one row group (one bounded batch) at a time."""
    parquet = pq.ParquetFile(path)
    for i in range(parquet.num_row_groups):
        yield from parquet.read_row_group(i).to_batches()


@dataclass
class _Task:
    path: str
    source_sha256: str
    part_path: str  # the dataset part, or a temporary part for a worker's share of a single file
    compression: str


@dataclass
class _Result:
    stats: CaptureStats
    error: str | None = None
    traceback: str | None = None  # set for an internal error (a bug), shown to the user


def _one_line(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    return text


def _reason(exc: BaseException, path: str) -> str:
    """The one-line message of ``exc`` without a leading ``path: `` (the summary adds it)."""
    text = _one_line(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _consume_capture(task: _Task, options: IngestOptions, labeler: Labeler | None,
                     write: Callable[[pa.RecordBatch], None],
                     on_chunk: Callable[[PacketBatch], None] | None = None) -> _Result:
    """Stream one capture's flows into ``write``. Never raises for a bad capture: returns why."""
    stats = CaptureStats(printable(task.path), task.source_sha256)
    try:
        with _untraced_heap():
            for batch in iter_flow_tables(task.path, options, labeler, source_sha256=task.source_sha256,
                                          stats=stats, on_chunk=on_chunk):
                write(batch)
        return _Result(stats)
    except OutputWriteError:
        raise  # the output cannot be written: not this capture's failure
    except INPUT_ERRORS as exc:
        log.debug("%s failed", task.path, exc_info=True)
        return _Result(stats, _reason(exc, task.path))
    except Exception as exc:  # a bug: reported as one, and it must not lose the other captures' output
        return _Result(stats, f"internal error ({type(exc).__name__}: {_reason(exc, task.path)})",
                       traceback.format_exc())


def _write_part(task: _Task, options: IngestOptions, labeler: Labeler | None, params: dict[str, Any],
                on_chunk: Callable[[PacketBatch], None] | None = None) -> _Result:
    """Ingest one capture into its own Parquet file (a dataset part), atomically."""
    writer = FlowsWriter(Path(task.part_path), task.compression)
    try:
        result = _consume_capture(task, options, labeler, writer.write, on_chunk)
        if result.error is None:
            writer.close(make_metadata(STAGE, params, source_file=printable(task.path), source_sha256=task.source_sha256,
                                       sources=[result.stats.to_dict()]))
            return result
    except OSError as exc:  # the output side: disk full, permissions
        result = _Result(CaptureStats(printable(task.path), task.source_sha256), _reason(exc, task.path))
    except BaseException:
        writer.abort()
        raise
    writer.abort()
    return result


def _is_dataset_output(output: Path) -> bool:
    return output.is_dir() or output.suffix.lower() != ".parquet"


def ingest(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: IngestOptions | None = None,
    *,
    labeler: Labeler | None = None,
    jobs: int = 1,
    quiet: bool = False,
    force: bool = False,
    lock: bool = True,
) -> IngestSummary:
    """Ingest captures into ``output``: one ``*.parquet`` file, or a dataset directory.

    A dataset directory holds one part per capture, ``<sha256[:16]>.parquet``; captures whose part
    exists with the same ingest parameters and labeler hash are skipped (unless ``force``), so
    re-running over a growing folder adds only new captures; a part made with other parameters or
    labels is re-ingested and atomically replaced. A capture that fails is reported in the summary and never costs the others their
    output. ``jobs`` worker processes read captures in parallel. A second ingest into the same
    output is refused (:class:`~pcapvision.errors.LockedError`) while this one runs; temporaries
    left beside (or in) the output by a killed ingest are removed first. ``lock=False`` is for the
    tasks of a distributed job writing parts of one dataset directory at once: the job holds the
    lock (:func:`output_guard`) and no task touches another's temporaries.
    """
    if not lock:
        return _ingest(paths, output, options, labeler=labeler, jobs=jobs, quiet=quiet, force=force)
    with output_guard(output):
        return _ingest(paths, output, options, labeler=labeler, jobs=jobs, quiet=quiet, force=force)


@contextlib.contextmanager
def output_guard(output: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of ingest output ``output`` and remove what a killed ingest left there."""
    target = Path(output)
    with output_lock(target, what="ingest into this output"):
        remove_stale_temporaries(target)
        if target.is_dir():
            remove_stale_temporaries_in(target)
        yield


def _ingest(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: IngestOptions | None,
    *,
    labeler: Labeler | None,
    jobs: int,
    quiet: bool,
    force: bool,
) -> IngestSummary:
    options = options or IngestOptions()
    jobs = check_positive_int("jobs", jobs)
    started = time.perf_counter()
    output = Path(output)
    dataset = _is_dataset_output(output)
    if output.exists() and not dataset and not output.is_file():
        raise ParameterError(f"{output}: output exists and is not a file")
    if dataset and output.exists() and not output.is_dir():
        raise ParameterError(f"{output}: output is neither a directory nor a *.parquet file")
    captures = discover_captures(paths)
    summary = IngestSummary(output=str(output))
    params = ingest_params(options, labeler)
    parallel = jobs > 1 and len(captures) > 1
    # Workers' shares of a single output file: uncompressed temporary parts, merged in input order.
    parts_dir = output if dataset else (
        Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".parts", dir=_mkdir(output.parent)))
        if parallel else None)
    sink = None if dataset else FlowsWriter(output)
    try:
        tasks = _plan(captures, output, dataset, parts_dir, params, force, summary)
        if sink is not None and not parallel:
            def run_one(task: _Task, on_chunk: Callable[[PacketBatch], None]) -> _Result:
                result = _consume_capture(task, options, labeler, sink.write, on_chunk)
                sink.rollback() if result.error else sink.commit()
                return result

            results = _run_tasks(tasks, run_one, None, jobs, quiet)
        else:
            results = _run_tasks(tasks, lambda task, on_chunk: _write_part(task, options, labeler, params, on_chunk),
                                 functools.partial(_write_part, options=options, labeler=labeler, params=params),
                                 jobs, quiet)
        ok = []
        for task, result in zip(tasks, results):
            if result.error is None:
                summary.add(result.stats)
                ok.append((task, result))
            else:
                summary.files_failed.append((task.path, result.error))
                summary.internal_errors += result.traceback is not None
        if sink is not None:
            if ok:
                if parallel:
                    for task, _ in ok:
                        for batch in _row_groups(Path(task.part_path)):
                            sink.write(batch)
                sink.close(make_metadata(STAGE, params, sources=[r.stats.to_dict() for _, r in ok]))
            else:
                sink.abort()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        if not dataset and parts_dir is not None:
            shutil.rmtree(parts_dir, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _plan(captures: list[Path], output: Path, dataset: bool, parts_dir: Path | None, params: dict[str, Any],
          force: bool, summary: IngestSummary) -> list[_Task]:
    """Hash the captures (the hash names parts, finds duplicates, seeds flow ids); the tasks left to run."""
    tasks: list[_Task] = []
    seen: dict[str, str] = {}
    for capture in captures:
        source = os.fspath(capture)
        try:
            sha = sha256_file(capture)
        except OSError as exc:
            summary.files_failed.append((source, _reason(exc, source)))
            log.error("%s: %s", source, _reason(exc, source))
            continue
        if sha in seen:
            log.info("%s: same content as %s, skipped", source, seen[sha])
            summary.files_skipped_already_ingested += 1
            continue
        seen[sha] = source
        part = (parts_dir or output.parent) / f"{sha[:16]}.parquet"
        if dataset and part.exists() and not force:
            if _part_is_current(part, source, params):
                summary.files_skipped_already_ingested += 1
                continue
            summary.files_reingested += 1
        tasks.append(_Task(source, sha, str(part), PARQUET_COMPRESSION if dataset else "none"))
    return tasks


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _part_is_current(part: Path, source: str, params: dict[str, Any]) -> bool:
    """Whether an existing dataset part was made from this capture with these parameters and
    labels (then it is kept); otherwise the capture is re-ingested and the part replaced."""
    try:
        recorded = metadata_from_schema(pq.read_schema(part)).get("params")
    except (OSError, pa.ArrowException, ValueError):
        log.warning("%s: part %s exists but is unreadable; re-ingesting", source, part.name)
        return False
    if not isinstance(recorded, dict) or part_identity(recorded) != part_identity(params):
        changed = sorted(k for k in set(part_identity(params)) | set(part_identity(recorded or {}))
                         if (recorded or {}).get(k) != params.get(k))
        log.warning("%s: part %s was made with other %s; re-ingesting", source, part.name,
                    "labels" if changed == ["labeler_sha256"] else f"parameters ({', '.join(changed)})")
        return False
    log.info("%s: already ingested (%s), skipped", source, part.name)
    return True


def _run_tasks(tasks: list[_Task], run_one: Callable[[_Task, Callable[[PacketBatch], None]], _Result],
               worker: Callable[[_Task], _Result] | None, jobs: int, quiet: bool) -> list[_Result]:
    """Run the tasks in this process (``run_one``) or in ``jobs`` worker processes (``worker``,
    picklable); results in task order, failures logged one line each."""
    total_bytes = sum(os.path.getsize(t.path) for t in tasks)
    results: list[_Result | None] = [None] * len(tasks)
    packets = 0
    with progress(total=total_bytes, desc="ingest", unit="B", unit_scale=True, unit_divisor=1000,
                  quiet=quiet) as bar:
        def report(done_files: int) -> None:
            bar.set_postfix(files=f"{done_files}/{len(tasks)}", packets=f"{packets:,}", refresh=False)

        def done(task: _Task, result: _Result) -> None:
            # Failures are reported as they happen, one line each, above the progress bar.
            if result.error is not None:
                with bar.external_write_mode(file=sys.stderr):
                    log.error("%s: %s", task.path, result.error)
                    if result.traceback is not None:
                        log.error("internal error, please report it with this traceback:\n%s",
                                  result.traceback.rstrip())
            else:
                log.debug("%s: %d packets, %d flows", task.path, result.stats.packets, result.stats.flows)

        if worker is None or jobs == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                size = os.path.getsize(task.path)
                shown = 0

                def on_chunk(batch: PacketBatch) -> None:
                    nonlocal packets, shown
                    packets += len(batch)
                    # Readers do not report bytes consumed: estimate from IP lengths.
                    step = min(size - shown, int(batch.ip_bytes.sum()) + 30 * len(batch))
                    shown += step
                    bar.update(step)
                    report(i)

                results[i] = run_one(task, on_chunk)
                done(task, results[i])
                bar.update(size - shown)
                report(i + 1)
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
                futures = {pool.submit(worker, task): i for i, task in enumerate(tasks)}
                try:
                    for finished, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                        i = futures[future]
                        results[i] = future.result()
                        done(tasks[i], results[i])
                        packets += results[i].stats.packets
                        bar.update(os.path.getsize(tasks[i].path))
                        report(finished)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
