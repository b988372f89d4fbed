"""Record chunks: where each captured frame of a capture lies, and what the walkers share.

A :class:`RecordChunk` says where each captured frame lies in a byte buffer, with its capture
timestamp (ns since the epoch), link type and record number; :mod:`pcapvision.ingest.pcap` and
:mod:`pcapvision.ingest.pcapng` produce them, :mod:`pcapvision.ingest.fastpath` and
:mod:`pcapvision.ingest.readers` decode their frames.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# libpcap's largest snapshot length; a record claiming more than this (or than a file's larger
# snaplen) is corrupt.
MAX_SNAPLEN = 262144
# Records longer than any snaplen could allow mean a corrupt header, not a jumbo frame.
ABSURD_CAPLEN = 1 << 24

# A chunk of a gzip capture is handed on once its windows hold this many decompressed bytes,
# even with fewer than chunk_records records: memory stays near a few windows whatever the
# record sizes.
MAX_CHUNK_BYTES = 32 << 20

# Walk status
OK, END, NEED_MORE, TRUNCATED, CORRUPT = "ok", "end", "need_more", "truncated", "corrupt"


@dataclass
class RecordChunk:
    """Captured frames of up to ``chunk_records`` consecutive records, located in ``buf``."""

    buf: np.ndarray  # uint8 buffer holding the frames
    offset: np.ndarray  # int64, start of each frame in ``buf``
    caplen: np.ndarray  # int64, captured bytes of each frame
    ts_ns: np.ndarray  # int64, capture time in ns since the epoch
    linktype: np.ndarray  # int32, link type of each frame
    frame_index: np.ndarray  # int64, 0-based record number in the file
    skipped: Counter[str] = field(default_factory=Counter)  # records not returned, by reason

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def frame(self, i: int) -> bytes:
        start = int(self.offset[i])
        return self.buf[start : start + int(self.caplen[i])].tobytes()


def gather_rows(buf: np.ndarray, idx: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``width`` bytes at each offset of ``idx`` as an (n, width) uint8 matrix, and a mask of the
    rows that would have run past the end of ``buf`` (their content is not meaningful).

    Copying fixed-size rows through a void-typed view is several times faster in numpy than
    gathering the same bytes one at a time.
    """
    limit = buf.shape[0] - width
    if limit < 0:
        return np.zeros((idx.shape[0], width), np.uint8), np.ones(idx.shape[0], bool)
    rows = np.ndarray((limit + 1,), f"V{width}", buffer=buf, strides=(1,))
    clipped = (idx > limit) | (idx < 0)
    safe = np.clip(idx, 0, limit) if clipped.any() else idx
    return rows[safe].view(np.uint8).reshape(-1, width), clipped


def warn_stop(path: Path, status: str, index: int, skipped: Counter[str]) -> None:
    if status == TRUNCATED:
        skipped["truncated_record"] += 1
        log.warning("%s: record %d is truncated at the end of the file; kept the %d records before it",
                    path, index, index)
    elif status == CORRUPT:
        skipped["corrupt_record"] += 1
        log.warning("%s: record %d has an impossible captured length; stopped reading, kept %d records",
                    path, index, index)


def stack_windows(pieces: list[tuple[np.ndarray, Any]]) -> tuple[np.ndarray, dict[int, int]]:
    """One buffer holding each distinct window of ``pieces`` once, and each window's offset in it."""
    windows: list[np.ndarray] = []
    base: dict[int, int] = {}
    total = 0
    for window, _ in pieces:
        if id(window) not in base:
            base[id(window)] = total
            windows.append(window)
            total += window.shape[0]
    if not windows:
        return np.zeros(0, np.uint8), base
    return (windows[0] if len(windows) == 1 else np.concatenate(windows)), base
