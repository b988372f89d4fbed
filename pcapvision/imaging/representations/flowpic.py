"""FlowPic: packet sizes against arrival times, one half of the image per direction."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError
from pcapvision.imaging.representations.base import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    Param,
    Representation,
    choice_param,
    column_array,
    int_param,
    list_parts,
    log_scale,
    ragged_index,
    register,
)
from pcapvision.validation import check_positive_number


@register
class FlowPicImage(Representation):
    """FlowPic (Shapira & Shavitt 2019): packet size against arrival time, one half per direction.

    Columns are time since the flow's first packet: with ``time_axis="log"`` packet time ``t`` ms
    goes to column ``floor(28 * ln(1 + t) / ln(1 + time_window_ms))``, with ``"linear"`` to
    ``floor(28 * t / time_window_ms)``; packets at ``t >= time_window_ms`` are not drawn. Rows are
    packet size (``size="ip"``: IP total length, ``"payload"``: L4 payload length) in 14 buckets
    of ``size_max / 14`` bytes (larger sizes in the last one), mirrored around the centre:
    initiator-to-responder packets (direction 0) in rows 14..27 growing downwards, responses
    (direction 1) in rows 13..0 growing upwards, so small packets meet at the centre line.
    Pixel = count ``n`` of the ``P`` drawn packets (the first ``max_packets``) in that cell,
    ``round(255 * ln(1 + n) / ln(1 + P))``. Needs no payload; flows with no packet drawn are
    skipped.
    """

    name = "flowpic"
    summary = "pixel (r, c) = log count of packets of size bucket r (direction by half) at time bucket c"
    skip_reason = "no packets"
    param_specs = (
        Param("max_packets", 64, "first packets of the flow drawn", int_param(1), int),
        Param("size", "ip", "packet size: ip (IP total length) or payload (L4 payload length)", choice_param("ip", "payload")),
        Param("size_max", 1500, "bytes spanned by the 14 size buckets (larger packets count in the last)", int_param(14), int),
        Param("time_window_ms", 10000.0, "time span drawn, ms after the first packet",
              lambda n, v: check_positive_number(n, v), float),
        Param("time_axis", "log", "time axis: log (ln(1 + t)) or linear", choice_param("log", "linear")),
    )

    def required_columns(self) -> tuple[str, ...]:
        size_column = "packet_ip_bytes" if self.params["size"] == "ip" else "packet_payload_bytes"
        return ("packet_time_ms", "packet_direction", size_column)

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        time_col, direction_col, size_col = self.required_columns()
        times, t_starts, t_lengths = list_parts(column_array(flows, time_col))
        directions, d_starts, d_lengths = list_parts(column_array(flows, direction_col))
        sizes, s_starts, s_lengths = list_parts(column_array(flows, size_col))
        if not (np.array_equal(t_lengths, d_lengths) and np.array_equal(t_lengths, s_lengths)):
            bad = int(np.flatnonzero((t_lengths != d_lengths) | (t_lengths != s_lengths))[0])
            raise DataContractError(
                f"row {bad}: {time_col}, {direction_col} and {size_col} have different numbers of packets"
            )
        n = len(t_lengths)
        take = np.minimum(t_lengths, self.params["max_packets"])
        rows, t_index = ragged_index(t_starts, take)
        _, d_index = ragged_index(d_starts, take)
        _, s_index = ragged_index(s_starts, take)
        t_ms = np.maximum(np.asarray(times, dtype=np.float64)[t_index], 0.0)  # capture clocks can step back
        window = self.params["time_window_ms"]
        drawn = t_ms < window
        if self.params["time_axis"] == "log":
            column = np.floor(IMAGE_SIDE * np.log1p(t_ms) / math.log1p(window))
        else:
            column = np.floor(IMAGE_SIDE * t_ms / window)
        column = np.minimum(column, IMAGE_SIDE - 1).astype(np.int64)
        half = IMAGE_SIDE // 2
        size = np.maximum(np.asarray(sizes, dtype=np.int64)[s_index], 0)
        size_bucket = np.minimum(size * half // self.params["size_max"], half - 1)
        response = np.asarray(directions)[d_index] != 0
        row = np.where(response, half - 1 - size_bucket, half + size_bucket)
        cell = (rows * IMAGE_PIXELS + row * IMAGE_SIDE + column)[drawn]
        rows = rows[drawn]
        totals = np.bincount(rows, minlength=n)
        # Few cells are hit: count densely, then scale and write only the cells packets fell in.
        counts = np.bincount(cell, minlength=n * IMAGE_PIXELS)[cell]
        images = np.zeros(n * IMAGE_PIXELS, dtype=np.uint8)
        images[cell] = log_scale(counts, totals[rows])
        return images.reshape(n, IMAGE_PIXELS), totals > 0
