"""One writer at a time: an exclusive, non-blocking lock on a file, for jobs that must not overlap.

    >>> with exclusive_lock("registry/.lock", what="retrain"):
    ...     ...                       # a second process gets LockedError at once

The lock is an advisory ``flock`` held on an open file, so the kernel drops it when the holder
exits for any reason, ``kill -9`` included: a lock left by a killed run is never "stuck". The
file also records the holder's pid, host and start time, for the message the next process
gets; a record naming a process that is gone is reported as stale and taken over. The file is
never deleted (deleting a lock file lets two processes lock two different files).
Works on local file systems; network file systems may not honour ``flock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pcapvision.errors import LockedError

log = logging.getLogger(__name__)


def _holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, what: str = "job") -> Iterator[dict[str, Any]]:
    """Hold an exclusive lock on ``path`` for the ``with`` block; yield the holder record written.

    Raises :class:`LockedError` at once (no waiting) when another live process holds it; the
    message names the file and the holder's pid, host and start time.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            since = f" since {holder['started']}" if holder.get("started") else ""
            raise LockedError(
                f"{target}: another {holder.get('what', what)} is running (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}{since}); try again when it has finished"
            ) from None
        previous = _holder(fd)
        if previous.get("pid") is not None:
            gone = previous.get("host") == socket.gethostname() and not pid_alive(int(previous["pid"]))
            log.warning("%s: stale lock of %s pid %s (started %s) %s; taking it over", target, previous.get("what", what),
                        previous["pid"], previous.get("started", "?"),
                        "whose process is gone" if gone else "that no process holds any more")
        holder = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode("utf-8"))
        os.fsync(fd)
        try:
            yield holder
        finally:
            os.ftruncate(fd, 0)  # an empty file: released cleanly, nothing stale to report
    finally:
        os.close(fd)  # closing drops the flock


__all__ = ["exclusive_lock", "pid_alive"]
