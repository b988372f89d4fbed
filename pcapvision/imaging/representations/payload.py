"""Payload representations: the payload bytes themselves, and their byte-pair distribution."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pcapvision.imaging.representations.base import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    PAYLOAD_COLUMNS,
    Param,
    Representation,
    choice_param,
    column_array,
    int_param,
    binary_parts,
    gather_prefix,
    log_scale,
    register,
)


def _payload_column_param() -> Param:
    return Param(
        "column",
        "payload",
        "payload column to read: payload (both directions in session order), src2dst_payload, dst2src_payload",
        choice_param(*PAYLOAD_COLUMNS),
    )


@register
class PayloadImage(Representation):
    """The first 784 bytes of the flow's application payload, row-major, zero-padded.

    One pixel = one payload byte: pixel ``(r, c)`` is byte ``28 * r + c`` of the payload in
    session order (both directions interleaved by time, TCP reassembled), its value the byte
    value 0..255; bytes past the end of the payload are 0. This is the USTC-TK2016 / Wang et al.
    (2017) representation restricted to the payload (no packet headers). Flows without payload
    are skipped.
    """

    name = "payload"
    summary = "pixel (r, c) = payload byte 28*r + c (0..255), zero-padded"
    skip_reason = "no payload"
    param_specs = (_payload_column_param(),)
    block_rows = 2048
    needs_payload = True

    def required_columns(self) -> tuple[str, ...]:
        return (self.params["column"],)

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        data, starts, lengths = binary_parts(column_array(flows, self.params["column"]))
        return gather_prefix(data, starts, lengths, IMAGE_PIXELS), lengths > 0


@register
class ByteDistributionImage(Representation):
    """Histogram of consecutive byte pairs of the payload, log-scaled.

    Pixel ``(r, c)`` counts the positions ``i`` where payload byte ``i`` falls in value bucket
    ``r`` and byte ``i + 1`` in bucket ``c``; bucket ``k`` holds the byte values ``v`` with
    ``floor(28 * v / 256) == k`` (9 or 10 values each). Pairs are counted cyclically over the first
    ``max_bytes`` bytes (the last byte pairs with the first), so each of the ``L`` bytes starts
    exactly one pair: row sums are the bucketed byte histogram, and the image is exactly the same
    when the same bytes start at another offset (any rotation of the payload); a prefix of ``k``
    inserted bytes changes at most ``k + 1`` pair counts. Count ``n`` of ``L`` pairs becomes
    ``round(255 * ln(1 + n) / ln(1 + L))``: 255 for a payload of one repeated byte, about 26 for a
    pair seen once in 1000 bytes. Why pairs and not single bytes: the transitions separate text,
    binary headers and ciphertext (uniform) far better than the 256 byte frequencies alone, and
    the grid is exactly 28 x 28. Flows without payload are skipped.
    """

    name = "byte-distribution"
    summary = "pixel (r, c) = log count of byte pairs (bucket r, bucket c) over the payload, cyclic"
    skip_reason = "no payload"
    param_specs = (
        _payload_column_param(),
        Param("max_bytes", 784, "payload bytes counted (the first ones)", int_param(2), int),
    )
    needs_payload = True

    def required_columns(self) -> tuple[str, ...]:
        return (self.params["column"],)

    def _block_rows(self) -> int:
        # Temporaries grow with max_bytes, so blocks shrink to keep them near the payload case.
        return max(1, self.block_rows * IMAGE_PIXELS // max(self.params["max_bytes"], IMAGE_PIXELS))

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        data, starts, lengths = binary_parts(column_array(flows, self.params["column"]))
        width = self.params["max_bytes"]
        n = len(starts)
        take = np.minimum(lengths, width)
        # Bucket floor(28 * v / 256) by integer arithmetic: faster than a 256-entry table lookup.
        bucket = gather_prefix(data, starts, lengths, width).astype(np.uint16)
        bucket *= IMAGE_SIDE
        bucket >>= 8
        following = np.zeros_like(bucket)
        following[:, :-1] = bucket[:, 1:]
        rows = np.flatnonzero(take > 0)
        following[rows, take[rows] - 1] = bucket[rows, 0]  # cyclic: the last byte pairs with the first
        # Past a payload's end both bytes are padding (bucket 0): those width - take positions all
        # count in cell (0, 0) and are subtracted below, which is cheaper than masking them out.
        codes = bucket * IMAGE_SIDE
        codes += following
        # One widening pass adds each row's offset so a single bincount histograms every row.
        codes = np.add(codes, (np.arange(n, dtype=np.intp) * IMAGE_PIXELS)[:, None], dtype=np.intp)
        counts = np.bincount(codes.ravel(), minlength=n * IMAGE_PIXELS).reshape(n, IMAGE_PIXELS)
        counts[:, 0] -= width - take
        return log_scale(counts, take, overwrite=True), lengths > 0
