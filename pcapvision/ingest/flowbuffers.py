"""Per-flow Python storage of the open flows: the ``packet_*`` lists and the payload buffers.

:class:`FlowBuffers` is one flow's storage; :func:`collect_lists` appends a batch's packets to the
lists of the flows that hold fewer than ``max_packets``. The payload buffers are filled by
:mod:`pcapvision.ingest.reassembly` and turned into columns by :mod:`pcapvision.ingest.emission`.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pcapvision.ingest.assembler import FlowAssembler

__all__ = ["INT32_CODE", "FlowBuffers", "collect_lists"]

INT32_CODE = "i" if array("i").itemsize == 4 else "l"  # array typecode of a C int32


class FlowBuffers:
    """Python-side per-flow storage: the packet lists and the payload being collected.

    Only containers the garbage collector does not track (``array``, ``bytearray``) are kept per
    flow, so that many open flows do not slow every collection down.

    ``streams[d]`` is the contiguous prefix of canonical direction ``d``. A TCP direction that
    receives a segment beyond its prefix switches to hole mode: its stream becomes a ``max_bytes``
    buffer and ``holes[d]`` a mask of the bytes received (the contiguous length is ``_end``).

    The interleaved payload only ever takes a direction's next contiguous bytes, so it is kept as
    ``runs`` (``length << 1 | direction``) and cut from the streams at emission: no third copy
    of the bytes while the flow is open, and one slice per run instead of one per packet.
    """

    __slots__ = ("times", "dirs", "plens", "ipbytes", "flags", "streams", "holes", "runs")

    def __init__(self) -> None:
        self.times = array("d")  # ms since first_seen_ns
        self.dirs = bytearray()  # canonical directions; mapped to src/dst at emission
        self.plens = array(INT32_CODE)
        self.ipbytes = array(INT32_CODE)
        self.flags = bytearray()
        self.streams = (bytearray(), bytearray())
        self.holes: list[bytearray | None] | None = None
        self.runs = array("q")

    def add_run(self, d: int, length: int) -> None:
        """The next ``length`` bytes of direction ``d`` join the interleaved payload."""
        runs = self.runs
        if runs and runs[-1] & 1 == d:
            runs[-1] += length << 1
        else:
            runs.append(length << 1 | d)

    def to_hole_mode(self, d: int, max_bytes: int, end: int) -> bytearray:
        stream = self.streams[d]
        stream.extend(bytes(max_bytes - len(stream)))
        have = bytearray(max_bytes)
        have[:end] = b"\x01" * end
        if self.holes is None:
            self.holes = [None, None]
        self.holes[d] = have
        return have

    def payload(self, streams: tuple[bytes | bytearray, bytes | bytearray],
                after_holes: tuple[int, ...] = (), max_bytes: int = 0) -> bytes:
        """The interleaved payload, cut from the contiguous ``streams`` by ``runs``; then, for
        the directions in ``after_holes`` (in that order), the bytes of the stream no run took
        (those after a skipped hole), up to ``max_bytes`` in all."""
        taken = [0, 0]
        parts = []
        for run in self.runs:
            d, length = run & 1, run >> 1
            start = taken[d]
            parts.append(streams[d][start : start + length])
            taken[d] = start + length
        out = b"".join(parts)
        for d in after_holes:
            room = max_bytes - len(out)
            if room > 0:
                out += streams[d][taken[d] : taken[d] + room]
        return out

    def stream_bytes(self, d: int, end: int, skip: bool) -> tuple[bytes, list[int]]:
        """Direction ``d``'s bytes and the offsets in them where a hole is: with ``skip``, every
        run of received bytes, holes closed (each join's offset listed); otherwise the contiguous
        prefix ([its length] when bytes after a hole were stranded)."""
        have = self.holes[d] if self.holes is not None else None
        if have is None:
            return bytes(self.streams[d]), []
        stream = self.streams[d]
        if not skip:
            return bytes(stream[:end]), [end] if have.find(1, end) != -1 else []
        out = bytearray()
        joins = []
        i = 0
        while True:
            z = have.find(1, i)
            if z == -1:
                break
            if z > i:
                joins.append(len(out))
            o = have.find(0, z)
            o = len(have) if o == -1 else o
            out += stream[z:o]
            i = o
        return bytes(out), joins


def collect_lists(asm: FlowAssembler, slots, seg_start, seg_id, ts, dc, fl, plen, ipb) -> None:
    """Append the packets of flows that hold fewer than ``max_packets`` to their lists."""
    room = asm._max_packets - asm._listed[slots]
    seg_len = np.diff(np.append(seg_start, len(ts)))
    take = np.minimum(seg_len, np.maximum(room, 0))
    segs = np.flatnonzero(take > 0)
    if not len(segs):
        return
    rank = np.arange(len(ts)) - seg_start[seg_id]
    need = rank < take[seg_id]
    # Raw little columns; each flow copies its slice without creating Python objects.
    times_ms = memoryview(((ts[need] - asm._first_ts[slots[seg_id[need]]]) / 1e6).tobytes())
    d = memoryview(dc[need].tobytes())
    f = memoryview(fl[need].tobytes())
    p = memoryview(plen[need].astype(np.int32).tobytes())
    b = memoryview(ipb[need].astype(np.int32).tobytes())
    asm._listed[slots] += take
    ends = np.cumsum(take[segs]).tolist()
    bufs = asm._bufs
    lo = 0
    for slot, hi in zip(slots[segs].tolist(), ends):
        buf = bufs[slot]
        buf.times.frombytes(times_ms[8 * lo : 8 * hi])
        buf.dirs += d[lo:hi]
        buf.plens.frombytes(p[4 * lo : 4 * hi])
        buf.ipbytes.frombytes(b[4 * lo : 4 * hi])
        buf.flags += f[lo:hi]
        lo = hi
