"""The one place ingest's compiled loops get their numba settings.

The per-record and per-byte loops of ingest (walking pcap records, decoding headers, copying
payload pieces) are plain Python-shaped loops compiled by numba. Compiled code is cached next to
the module (or in numba's user cache when that is not writable), so only the first run after an
install or an upgrade pays the compilation (a few seconds); later processes load it.
``boundscheck`` stays off: every kernel checks its own bounds against the buffer it reads.
"""

from __future__ import annotations

import numba
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["compiled", "compiled_inline", "copy_bytes"]

compiled = numba.njit(cache=True, nogil=True, boundscheck=False)
# For helpers called per packet from another compiled loop: inlined into the caller, since a
# call that passes arrays costs a reference-count update per array (a microsecond per packet
# with the assembler's state).
compiled_inline = numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")


@intrinsic
def copy_bytes(typingctx, dst, dst_at, src, src_at, n):
    """``dst[dst_at : dst_at + n] = src[src_at : src_at + n]`` for contiguous uint8 arrays, as one
    ``memcpy`` (numba's slice assignment copies byte by byte: ~4x slower). Bounds are the
    caller's to respect; the ranges must not overlap."""
    sig = types.void(dst, dst_at, src, src_at, n)

    def codegen(context, builder, signature, args):
        def index(k):
            return context.cast(builder, args[k], signature.args[k], types.intp)

        dst_array = context.make_array(signature.args[0])(context, builder, args[0])
        src_array = context.make_array(signature.args[2])(context, builder, args[2])
        cgutils.raw_memcpy(builder, builder.gep(dst_array.data, [index(1)]), builder.gep(src_array.data, [index(3)]),
                           index(4), context.get_constant(types.intp, 1))
        return context.get_dummy_value()

    return sig, codegen
