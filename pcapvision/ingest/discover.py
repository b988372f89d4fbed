"""Input discovery: files, directories and globs -> the capture files to ingest."""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pcapvision.errors import CaptureFormatError, InputNotFoundError, PcapvisionError

__all__ = ["CAPTURE_SUFFIXES", "discover_captures", "find_captures", "input_failures", "is_capture_name"]

log = logging.getLogger(__name__)

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
    found, problems = find_captures(paths)
    if problems:
        raise problems[0][1]
    return found


def find_captures(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, PcapvisionError]]]:
    """:func:`discover_captures` that carries on past an input yielding nothing: the captures found,
    and (input, error) for each path, pattern or directory that gave none (a batch then reads the
    others and reports these). Raises only when no input gives a capture."""
    paths = [os.fspath(p) for p in paths]
    found: list[Path] = []
    problems: list[tuple[str, PcapvisionError]] = []
    for text in paths:
        try:
            found.extend(_expand(text))
        except (InputNotFoundError, CaptureFormatError) as exc:
            problems.append((text, exc))
    seen: set[Path] = set()
    unique = []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        if problems:
            raise problems[0][1]
        raise InputNotFoundError(f"{', '.join(paths)}: no capture files found")
    return unique, problems


def input_failures(problems: list[tuple[str, PcapvisionError]]) -> list[tuple[str, str]]:
    """(input, reason) of each :func:`find_captures` problem, as a batch summary lists failed files;
    each is logged as an error."""
    failures = []
    for text, exc in problems:
        log.error("%s", exc)
        failures.append((text, str(exc).removeprefix(f"{text}: ")))
    return failures


def _expand(text: str) -> list[Path]:
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        return _captures_under(path)
    if path.exists():  # a FIFO, socket or device: reading it could block or never end
        raise CaptureFormatError(f"{text}: not a regular file or directory ({_file_kind(path)}); give a capture file")
    if _GLOB_CHARS & set(text):
        # Shells that do not expand globs (Windows, quoted arguments) pass them through.
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputNotFoundError(f"{text}: no file matches this pattern")
        found: list[Path] = []
        for match in matches:
            m = Path(match)
            if m.is_dir():
                found.extend(_captures_under(m, required=False))
            elif m.is_file():
                found.append(m)
        return found
    raise InputNotFoundError(f"{text}: no such file or directory")


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
