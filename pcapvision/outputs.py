"""Outputs made of several files: directories written as a unit, file sets swapped in together,
and locks that refuse a second writer into the same output.

:func:`staged_directory` builds a whole output directory (a model directory with its manifest
and report) in a hidden temporary sibling and swaps it into place only when complete; until the
swap the previous directory stays intact, so a killed run never leaves a directory whose files
belong to different runs. :func:`replace_files_together` does the same for a set of files in a
shared directory (the robustness report's json, npz and html). :func:`output_lock` is held for
the whole write: a second process writing the same output is refused with a clear message
instead of "last writer wins". Temporary siblings left by a killed writer are removed by the
next writer of the same output (which holds the lock, so none of them is live).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pcapvision.errors import ParameterError
from pcapvision.io import current_umask, temp_path_beside
from pcapvision.lock import exclusive_lock

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str], *, what: str = "pcapvision writer") -> Iterator[None]:
    """Hold the exclusive lock of output ``path`` (a hidden ``.NAME.lock`` beside it, see
    :func:`pcapvision.lock.exclusive_lock`): a second writer gets :class:`LockedError` at once.
    The lock dies with its process, so a killed writer never blocks the next one."""
    target = Path(path)
    with exclusive_lock(_lock_path(target), what=what):
        yield


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove hidden ``.NAME.*.tmp`` (and ``.parts``) files and directories left beside ``target`` by a killed
    writer; call only while holding :func:`output_lock` on ``target``. Returns what was removed."""
    # The names tempfile gives temporaries of *this* output: .NAME.<8 random chars>[.ext].tmp|.parts
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{_TEMP_TAIL}")
    removed = _remove_matching(target.parent, pattern)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run beside %s", len(removed), target)
    return removed


def remove_stale_temporaries_in(directory: Path) -> list[Path]:
    """Remove the hidden temporaries (``.NAME.<random>.tmp``) of every file inside output
    directory ``directory``; call only while holding :func:`output_lock` on it."""
    removed = _remove_matching(directory, re.compile(rf"\.[^/]+?\.{_TEMP_TAIL}"))
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), directory)
    return removed


_TEMP_TAIL = r"[a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.(tmp|parts)"


def _remove_matching(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for stale in directory.iterdir():
        if not pattern.fullmatch(stale.name):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        removed.append(stale)
    return removed


@contextlib.contextmanager
def staged_directory(
    path: str | os.PathLike[str], *, replaceable: Callable[[Path], bool] | None = None, what: str = "output directory"
) -> Iterator[Path]:
    """Yield an empty hidden directory beside ``path``; on success it replaces ``path`` whole.

    The lock on ``path`` is held throughout (:class:`LockedError` for a second writer), and
    stale temporaries of an earlier killed writer are removed first. Creating the staging
    directory up front also checks that the output can be written before any computation.
    An existing non-empty ``path`` is replaced only when ``replaceable(path)`` says it is an
    output of the same kind; otherwise nothing is touched and :class:`ParameterError` says why.
    On an exception the staging directory is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ParameterError(f"{target}: exists and is not a directory; refusing to replace it with a {what}")
    if target.is_dir() and any(target.iterdir()) and replaceable is not None and not replaceable(target):
        raise ParameterError(f"{target}: directory is not empty and is not a {what}; refusing to replace it")
    with output_lock(target, what=f"writer of this {what}"):
        remove_stale_temporaries(target)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(stage, 0o777 & ~current_umask())
        try:
            yield stage
            _swap_in(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, target: Path) -> None:
    """Put ``stage`` at ``target``; afterwards ``stage`` holds the old directory (or nothing)."""
    if not target.exists():
        os.rename(stage, target)
        return
    if _rename_exchange(stage, target):
        return
    # No atomic exchange here: move the old directory aside first, so some complete directory
    # (old or new) always exists under one of the two names.
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.rmdir(aside)
    os.rename(target, aside)
    os.rename(stage, target)
    os.rename(aside, stage)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def check_writable_directory(path: str | os.PathLike[str]) -> Path:
    """Create directory ``path`` if needed and check a file can be written in it: call before long
    computations so an unwritable output fails in a second, not after minutes. Raises OSError."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    temp_path_beside(out / "write-check").unlink()
    return out


def replace_files_together(directory: str | os.PathLike[str], writers: Mapping[str, Callable[[Path], None]]) -> list[Path]:
    """Write a set of files into ``directory``, each first to a hidden temporary, and rename them
    into place only after every one was written: a failure leaves all the old files as they were.

    ``writers`` maps each file name to a function writing that file at the path it is given.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, write in writers.items():
            tmp = temp_path_beside(out / name, suffix=Path(name).suffix + ".tmp")
            staged.append((tmp, out / name))
            write(tmp)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return [final for _, final in staged]


__all__ = ["remove_stale_temporaries_in", "check_writable_directory", "output_lock", "remove_stale_temporaries", "replace_files_together", "staged_directory"]
