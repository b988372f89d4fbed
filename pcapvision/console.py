"""Logging set-up and progress bars: the one home for what goes to stderr.

Diagnostics go through :mod:`logging`; progress bars are tqdm bars on stderr that stay silent
when stderr is not a terminal or when the user asked for ``--quiet``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_quiet = False
_silence_native = False  # set by setup_logging for command-line runs without --debug


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns it
        pass


def setup_logging(*, debug: bool = False, quiet: bool = False) -> None:
    """Configure the ``pcapvision`` logger for a command-line run.

    ``debug`` shows debug messages; ``quiet`` keeps only warnings and errors and turns progress
    bars off for the rest of the process.
    """
    global _quiet, _silence_native
    _quiet = quiet
    _silence_native = not debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    root = logging.getLogger("pcapvision")
    root.setLevel(level)
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root.propagate = False


def import_tensorflow() -> None:
    """Import TensorFlow and Keras now, once. In a command-line run without ``--debug`` the
    import and the device probe run with file descriptor 2 pointed at /dev/null: TensorFlow's
    C++ start-up lines (absl, oneDNN, CUDA probing) bypass Python's stderr and its log levels.
    Call it where a command first needs TensorFlow, after its inputs were checked."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    with _native_stderr_silenced() if _silence_native else contextlib.nullcontext():
        import keras  # noqa: F401 - imported for its start-up side effects
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe, and its messages, happen now


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded, closed): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def progress_enabled(quiet: bool | None = None) -> bool:
    """True when a progress bar should be drawn: stderr is a terminal and nobody asked for quiet."""
    if quiet if quiet is not None else _quiet:
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    quiet: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on stderr, disabled when not a terminal or when quiet.

    Use as an iterator wrapper or, with ``iterable=None``, as a manual bar (``bar.update(n)``,
    ``bar.set_postfix(...)``); always close it (it is a context manager).
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not progress_enabled(quiet),
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )


def iter_progress(iterable: Iterable[T], **kwargs: Any) -> Iterator[T]:
    """Iterate ``iterable`` with a progress bar (see :func:`progress`)."""
    with progress(iterable, **kwargs) as bar:
        yield from bar
