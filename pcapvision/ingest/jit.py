"""The one place ingest's compiled loops get their numba settings.

The per-record and per-byte loops of ingest (walking pcap records, decoding headers, copying
payload pieces) are plain Python-shaped loops compiled by numba. Compiled code is cached next to
the module (or in numba's user cache when that is not writable), so only the first run after an
install or an upgrade pays the compilation (a few seconds); later processes load it.
``boundscheck`` stays off: every kernel checks its own bounds against the buffer it reads.
"""

from __future__ import annotations

import numba

__all__ = ["compiled"]

compiled = numba.njit(cache=True, nogil=True, boundscheck=False)
