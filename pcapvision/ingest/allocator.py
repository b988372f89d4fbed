"""Keep the C allocator from handing large freed blocks back to the kernel while a capture is read.

Ingest allocates and frees tens of megabytes per packet chunk (decoded columns, gathered payload,
Arrow batches). glibc's malloc serves large requests with fresh ``mmap`` pages and returns them
on ``free``, so every chunk pays a page fault per 4 KiB touched again (~3.5 us each on a virtual
machine: a sizeable share of ingest's CPU). Inside :func:`reusing_freed_memory` large blocks come
from the heap and freed ones stay there for the next chunk; on exit the defaults are restored
and the heap is trimmed, so a longer-lived process (``pcapvision run``) does not keep the peak.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["reusing_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults (the mmap threshold is then fixed, not dynamic)
_DEFAULT_MMAP_THRESHOLD = 128 * 1024
# Requests below this come from the heap: far above one chunk's arrays (65,536 packets), below
# anything a single allocation of ingest should reach.
_MMAP_THRESHOLD = 256 << 20
_TRIM_THRESHOLD = 1 << 30


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()
_depth = 0


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Within this block (re-entrant), freed memory is kept for reuse instead of unmapped."""
    global _depth
    if _LIBC is None:
        yield
        return
    if _depth == 0:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            _LIBC.malloc_trim(0)
