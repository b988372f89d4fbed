"""Capture files: format detection and the entry points that walk any capture into record chunks.

:func:`iter_records` opens a capture (:mod:`pcapvision.ingest.source`: plain or gzip), detects
pcap or pcapng from its first bytes (naming archives that are not captures) and hands it to
:mod:`pcapvision.ingest.pcap` or :mod:`pcapvision.ingest.pcapng`, which yield
:class:`~pcapvision.ingest.records.RecordChunk` s; :func:`capture_info` describes a capture.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest.pcap import PCAP_MAGIC_MODIFIED, PCAP_MAGIC_NSEC, PCAP_MAGIC_USEC, iter_pcap, parse_pcap_header
from pcapvision.ingest.pcapng import PCAPNG_SHB, PcapngWalker, check_shb, iter_pcapng
from pcapvision.ingest.records import RecordChunk
from pcapvision.ingest.source import Source, check_path

__all__ = ["HEAD_BYTES", "archive_kind", "capture_info", "iter_records"]


def _detect(path: Path, head: bytes) -> str:
    """'pcap' or 'pcapng' from the first bytes, else CaptureFormatError."""
    if not head:
        raise CaptureFormatError(f"{path}: empty file, not a capture")
    if len(head) >= 4:
        le, be = struct.unpack("<I", head[:4])[0], struct.unpack(">I", head[:4])[0]
        if PCAP_MAGIC_USEC in (le, be) or PCAP_MAGIC_NSEC in (le, be) or PCAP_MAGIC_MODIFIED in (le, be):
            return "pcap"
        if le == PCAPNG_SHB:
            return "pcapng"
    archive = archive_kind(head)
    if archive is not None:
        raise CaptureFormatError(f"{path}: {archive}, not a capture; unpack it first")
    raise CaptureFormatError(
        f"{path}: not a pcap or pcapng capture (starts with bytes {head[:4].hex() or 'none'})"
    )


# Archive and compression formats a capture is often shipped in, by their magic bytes (gzip is
# read directly, so a .tar.gz shows up as a tar archive).
_ARCHIVE_MAGICS = (
    (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"), (b"PK\x07\x08", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"Rar!\x1a\x07", "a rar archive"),
    (b"BZh", "a bzip2-compressed file"), (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"), (b"\x04\x22\x4d\x18", "an lz4-compressed file"),
)
HEAD_BYTES = 512  # first bytes read to detect the format (a tar header's magic sits at 257)


def archive_kind(head: bytes) -> str | None:
    """'a zip archive', 'a tar archive'... when ``head`` starts one of the known archives."""
    for magic, kind in _ARCHIVE_MAGICS:
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "a tar archive"
    return None


# --- public entry points ---------------------------------------------------------------------


def iter_records(path: str | os.PathLike[str], chunk_records: int = 65536) -> Iterator[RecordChunk]:
    """Chunks of at most ``chunk_records`` records of the capture at ``path``, in file order.

    Raises :class:`CaptureFormatError` when the file is not a readable capture, or when it breaks
    off (truncated or corrupt, gzip included) before its first complete record; truncated or
    corrupt records later in the file end the walk with a warning and a count in ``skipped``,
    every complete record before them kept.
    """
    p = check_path(path)
    source = Source(p)
    try:
        if source.mapped is not None:
            head = source.mapped[:HEAD_BYTES].tobytes()
        else:
            head, _clean = source.read(HEAD_BYTES)
            if not head:
                raise CaptureFormatError(f"{p}: empty or corrupt gzip stream, not a capture")
        fmt = _detect(p, head)
        walk = iter_pcap if fmt == "pcap" else iter_pcapng
        records, broken = 0, False
        for chunk in walk(p, source, head, chunk_records):
            records += len(chunk)
            broken = broken or bool(chunk.skipped.get("truncated_record") or chunk.skipped.get("corrupt_record"))
            yield chunk
        if records == 0 and (broken or not source.clean):
            raise CaptureFormatError(f"{p}: no complete record before the capture breaks off (truncated or corrupt)")
    finally:
        source.close()


def capture_info(path: str | os.PathLike[str]) -> dict:
    """Format, compression, link types, snaplen and timestamp resolution of a capture.

    Keys: ``path``, ``format`` (pcap/pcapng), ``compressed`` (gzip or None), ``byte_order``,
    ``link_types`` (list); pcap adds ``version``, ``snaplen`` (int) and ``ts_resolution_ns``;
    pcapng adds per-interface lists ``snaplen`` and ``ts_resolution`` ("1e-6 s", "2^-20 s"...),
    for the interfaces described before the first packet block. Reads at most 1 MiB.
    """
    p = check_path(path)
    source = Source(p)
    try:
        if source.mapped is not None:
            head = source.mapped[: 1 << 20].tobytes()
        else:
            head, _clean = source.read(1 << 20)
        fmt = _detect(p, head)
        info: dict = {"path": str(p), "format": fmt, "compressed": "gzip" if source.compressed else None}
        if fmt == "pcap":
            h = parse_pcap_header(p, head)
            info.update(
                byte_order="big" if h.big_endian else "little",
                version=f"{h.version[0]}.{h.version[1]}",
                link_types=[h.linktype],
                snaplen=h.snaplen,
                ts_resolution_ns=1 if h.nanosecond else 1000,
            )
            return info
        check_shb(p, head)
        walker = PcapngWalker(p)
        buf = np.frombuffer(head, np.uint8)
        walker.walk(buf, 0, True, 1, 0)
        info.update(
            byte_order="big" if walker.e == ">" else "little",
            link_types=[i.linktype for i in walker.interfaces],
            snaplen=[i.snaplen for i in walker.interfaces],
            ts_resolution=[
                f"2^-{i.tsresol & 0x7F} s" if i.tsresol & 0x80 else f"1e-{i.tsresol} s" for i in walker.interfaces
            ],
        )
        return info
    finally:
        source.close()
