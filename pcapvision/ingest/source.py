"""Opening a capture: its decompressed bytes, memory-mapped when plain, streamed when gzip.

Uncompressed files are memory-mapped and the chunks' buffers are views of the map (zero copy);
gzip files (detected by magic bytes) are decompressed as a stream, a few MiB at a time.
"""

from __future__ import annotations

import logging
import mmap
import os
import zlib
from pathlib import Path

import numpy as np

from pcapvision.errors import CaptureFormatError, InputNotFoundError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
GZIP_BLOCK_BYTES = 8 << 20  # decompressed bytes read from a gzip stream at a time
GZIP_INPUT_BYTES = 1 << 20  # compressed bytes read from the file at a time
ZLIB_STEP_BYTES = 1 << 14  # ...and fed to the decompressor at a time


class Source:
    """The decompressed bytes of a capture: one mapped buffer, or a gzip stream read in blocks.

    gzip is decompressed incrementally (a MiB of input at a time), so a truncated or corrupt
    stream still yields every byte before the break; concatenated gzip members are read in turn.
    """

    def __init__(self, path: Path):
        self.path = path
        self.compressed = False
        self.clean = True  # False once the gzip stream broke off or turned corrupt
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        head = self._fh.read(2)
        if head == GZIP_MAGIC:
            self.compressed = True
            self._fh.seek(0)
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._buf, self._off = b"", 0  # compressed input read from the file, and how far it is used
            self._step = ZLIB_STEP_BYTES
            self._in_member = False
            self._ended = False
            self.mapped = None
        else:
            size = os.fstat(self._fh.fileno()).st_size
            if size == 0:
                self._fh.close()
                raise CaptureFormatError(f"{path}: empty file, not a capture")
            self.mapped = np.frombuffer(mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
            # The map keeps its own handle; batches keep the map alive as long as they need it.
            self._fh.close()

    def read(self, n: int) -> tuple[bytes, bool]:
        """Next ``n`` decompressed bytes (fewer at the end) and whether the stream is still clean.

        A truncated or corrupt stream returns what was decompressed before the break (input is
        fed in steps, and a step that fails is redone a byte at a time), then ``b""``;
        :attr:`clean` turns False and a warning names the cause.
        """
        out = bytearray()
        while len(out) < n and not self._ended:
            if self._off >= len(self._buf):
                self._buf, self._off = self._fh.read(GZIP_INPUT_BYTES), 0
                if not self._buf:
                    self._ended = True
                    if self._in_member:
                        self._stop("gzip stream is truncated")
                    break
            if not self._in_member:  # gzip allows zero padding between and after members
                head = self._buf[self._off:self._off + ZLIB_STEP_BYTES]
                self._off += len(head) - len(head.lstrip(b"\x00"))
                if self._off >= len(self._buf):
                    continue
                self._in_member = True
            step = memoryview(self._buf)[self._off:self._off + self._step]
            saved = self._z.copy()
            try:
                out += self._z.decompress(step, n - len(out))
            except zlib.error as exc:
                if self._step > 1:  # zlib drops a failing call's output: redo the step byte by byte
                    self._z, self._step = saved, 1
                    continue
                self._stop(f"gzip stream is corrupt ({exc})")
                break
            # At a member's end the rest of the step is unused_data (unconsumed_tail may repeat it).
            left = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            self._off += len(step) - len(left)
            if self._z.eof:  # end of one member; another may follow
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._in_member = False
        return bytes(out), self.clean

    def _stop(self, reason: str) -> None:
        self._ended = True
        self.clean = False
        log.warning("%s: %s; keeping what was read before the break", self.path, reason)

    def close(self) -> None:
        if self.compressed:
            self._fh.close()


def check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise CaptureFormatError(f"{p}: not a regular file")
    return p
