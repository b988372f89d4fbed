"""Input discovery: files, directories and globs -> the capture files to ingest."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pcapvision.errors import CaptureFormatError, InputNotFoundError

__all__ = ["CAPTURE_SUFFIXES", "discover_captures", "is_capture_name"]

# Suffixes picked up when a directory is given (explicitly named files are read whatever their name).
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")
_GLOB_CHARS = frozenset("*?[")


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
