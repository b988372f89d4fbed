"""Image representations of flows: what one pixel means.

Each representation is a small class registered in :data:`REPRESENTATIONS` under its name. It
declares its parameters (with defaults and checks) and the flows-table columns it reads, and
renders a batch of flows into ``(N, 28, 28)`` uint8 images with numpy only (no per-flow Python
loop), plus a mask of the rows it could render and the reason the others were skipped.

No representation reads addresses, ports, absolute timestamps or any capture header: they see
only the application payload bytes, or per-packet sizes, directions and times relative to the
flow's first packet.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError, ParameterError
from pcapvision.validation import check_choice, check_int, check_positive_number

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784
PAYLOAD_COLUMNS = ("payload", "src2dst_payload", "dst2src_payload")

# Rows rendered per block. Small enough that a block's temporaries stay in cache (2048 payload
# images are 1.6 MB): measured ~1.8x faster than 16384-row blocks; tiny blocks pay per-call costs.
_BLOCK_ROWS = 4096


class RenderResult(NamedTuple):
    """What :meth:`Representation.render` returns."""

    images: np.ndarray  # uint8 (N, 28, 28); all-zero where not valid
    valid: np.ndarray  # bool (N,): the row could be rendered
    skip_reason: str  # why the rows with valid == False were skipped


@dataclass(frozen=True)
class Param:
    """One documented parameter of a representation."""

    name: str
    default: Any
    help: str
    check: Callable[[str, Any], Any]
    parse: Callable[[str], Any] = str  # turns a command-line string into a value


def _int_param(min_value: int, max_value: int | None = None) -> Callable[[str, Any], int]:
    return lambda name, value: check_int(name, value, min_value=min_value, max_value=max_value)


def _choice_param(*choices: str) -> Callable[[str, Any], str]:
    return lambda name, value: check_choice(name, value, choices)


class Representation(ABC):
    """Base class: validated parameters and the columns a representation reads."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what one pixel means
    skip_reason: ClassVar[str]  # why a row the representation cannot draw is skipped
    param_specs: ClassVar[tuple[Param, ...]] = ()
    needs_payload: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        given = dict(params or {})
        known = {p.name: p for p in self.param_specs}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ParameterError(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for representation {self.name!r}; "
                f"it takes {sorted(known) or 'none'}."
            )
        self.params: dict[str, Any] = {
            name: spec.check(name, given.get(name, spec.default)) for name, spec in known.items()
        }

    @classmethod
    def parse_params(cls, pairs: Mapping[str, str]) -> dict[str, Any]:
        """Turn ``{"max_bytes": "784"}`` (command-line strings) into typed parameter values."""
        specs = {p.name: p for p in cls.param_specs}
        out: dict[str, Any] = {}
        for key, text in pairs.items():
            if key not in specs:
                raise ParameterError(
                    f"Unknown parameter {key!r} for representation {cls.name!r}; it takes {sorted(specs) or 'none'}."
                )
            try:
                out[key] = specs[key].parse(text)
            except ValueError:
                kind = {"int": "an int", "float": "a number"}.get(specs[key].parse.__name__, "a string")
                raise ParameterError(f"The {key!r} parameter must be {kind}. Got {text!r} instead.") from None
        return out

    @abstractmethod
    def required_columns(self) -> tuple[str, ...]:
        """Flows-table columns :meth:`render` reads."""

    def render(self, flows: pa.Table | pa.RecordBatch) -> RenderResult:
        """Render every row of ``flows`` (which must hold :meth:`required_columns`)."""
        missing = [c for c in self.required_columns() if c not in flows.schema.names]
        if missing:
            raise DataContractError(
                f"flows table lacks column(s) {', '.join(missing)} needed by representation {self.name!r}"
            )
        n = flows.num_rows
        images = np.empty((n, IMAGE_PIXELS), dtype=np.uint8)
        valid = np.empty(n, dtype=bool)
        for lo in range(0, n, self._block_rows()):
            block = flows.slice(lo, self._block_rows())
            images[lo : lo + block.num_rows], valid[lo : lo + block.num_rows] = self._render_block(block)
        return RenderResult(images.reshape(n, IMAGE_SIDE, IMAGE_SIDE), valid, self.skip_reason)

    block_rows: ClassVar[int] = _BLOCK_ROWS

    def _block_rows(self) -> int:
        return self.block_rows

    @abstractmethod
    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images ``(n, 784)`` and the valid mask of one block of rows."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


REPRESENTATIONS: dict[str, type[Representation]] = {}


def register(cls: type[Representation]) -> type[Representation]:
    """Class decorator: add a representation to :data:`REPRESENTATIONS`."""
    REPRESENTATIONS[cls.name] = cls
    return cls


def get_representation(name: str, params: Mapping[str, Any] | None = None) -> Representation:
    """The representation registered as ``name``, with ``params`` checked and completed."""
    check_choice("representation", name, REPRESENTATIONS)
    return REPRESENTATIONS[name](params)


# --- column access (Arrow buffers -> numpy, zero copy) -------------------------------------------


def _column(flows: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = flows.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, starts, lengths)`` of a binary/string array: value ``i`` is ``data[starts[i]:][:lengths[i]]``.

    Views of the Arrow buffers (no copy); null values have length 0.
    """
    if pa.types.is_binary_view(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_binary())
    if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type):
        offset_type = np.int64
    elif pa.types.is_binary(arr.type) or pa.types.is_string(arr.type):
        offset_type = np.int32
    else:
        raise TypeError(f"expected a binary column, got {arr.type}")
    n = len(arr)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type, count=n + 1, offset=arr.offset * np.dtype(offset_type).itemsize)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None and n else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    if arr.null_count:
        lengths[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
    return data, starts, lengths


# _PREFIX_MASK[k] is 0xFF for the first k bytes of a row and 0 after: one row gather + AND
# zeroes everything past a value's end, far cheaper than building a comparison per block.
_PREFIX_MASKS: dict[int, np.ndarray] = {}


def _prefix_masks(width: int) -> np.ndarray:
    if width not in _PREFIX_MASKS:
        _PREFIX_MASKS[width] = np.where(np.arange(width)[None, :] < np.arange(width + 1)[:, None], 0xFF, 0).astype(np.uint8)
    return _PREFIX_MASKS[width]


def gather_prefix(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` bytes of each value, zero-padded: uint8 ``(len(starts), width)``.

    A strided view of ``data`` with one row per byte offset turns the gather into a row take
    (one ``memcpy`` of ``width`` bytes per value); bytes past a value's end are then zeroed.
    """
    n = len(starts)
    take = np.minimum(lengths, width)
    limit = data.size - width  # last start offset whose window fits inside data
    fits = starts <= limit
    if limit >= 0 and fits.all():
        windows = np.lib.stride_tricks.as_strided(data, shape=(limit + 1, width), strides=(1, 1), writeable=False)
        out = windows[starts]
    else:
        out = np.zeros((n, width), dtype=np.uint8)
        if limit >= 0 and fits.any():
            windows = np.lib.stride_tricks.as_strided(data, shape=(limit + 1, width), strides=(1, 1), writeable=False)
            out[fits] = windows[starts[fits]]
        if n and not fits.all():
            # The last few values sit in the final `width` bytes: window into a zero-padded tail copy.
            tail_start = int(starts[~fits].min())
            tail = np.concatenate([data[tail_start:], np.zeros(width, np.uint8)])
            tail_windows = np.lib.stride_tricks.as_strided(
                tail, shape=(tail.size - width + 1, width), strides=(1, 1), writeable=False
            )
            out[~fits] = tail_windows[starts[~fits] - tail_start]
    if n and (take < width).any():
        np.bitwise_and(out, _prefix_masks(width)[take], out=out)
    return out


def list_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, starts, lengths)`` of a list array as numpy (null lists have length 0)."""
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise TypeError(f"expected a list column, got {arr.type}")
    offsets = arr.offsets.to_numpy().astype(np.int64)
    # ``values`` ignores a slice's bounds: convert only the range this slice's offsets cover.
    first = int(offsets[0])
    values = arr.values.slice(first, int(offsets[-1]) - first).to_numpy(zero_copy_only=False)
    offsets -= first
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    if arr.null_count:
        lengths[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
    return values, starts, lengths


def ragged_index(starts: np.ndarray, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row ids and value indices of the first ``take[i]`` values from ``starts[i]``, all rows concatenated."""
    rows = np.repeat(np.arange(len(starts), dtype=np.int64), take)
    first = np.cumsum(take) - take  # position of each row's first element in the concatenation
    index = np.arange(rows.size, dtype=np.int64) - np.repeat(first - starts, take)
    return rows, index


def log_scale(counts: np.ndarray, totals: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """``round(255 * ln(1 + count) / ln(1 + total))`` as uint8 (0 where total is 0).

    ``counts`` is 2-D (one row per image, ``totals`` per row) or 1-D (``totals`` per element);
    counts never exceed their total. The formula is tabulated for every (total, count) pair up
    to the largest total, so the per-cell work is one integer add and one byte lookup.
    ``overwrite=True`` lets an intp ``counts`` be reused as the index array.
    """
    top = int(totals.max(initial=0))
    log_table = np.log1p(np.arange(top + 1, dtype=np.float64))
    if top > 2048:  # a table that large costs more than it saves: compute directly
        denominator = log_table[totals]
        factor = 255.0 / np.where(denominator > 0, denominator, 1.0)
        scaled = log_table[counts] * (factor[:, None] if counts.ndim == 2 else factor)
        return np.rint(scaled).astype(np.uint8)
    denominator = np.where(log_table > 0, log_table, 1.0)
    table = np.rint(255.0 * log_table[None, :] / denominator[:, None]).astype(np.uint8)  # [total, count]
    base = totals.astype(np.intp) * (top + 1)
    index = counts if overwrite and counts.dtype == np.intp else counts.astype(np.intp)
    index += base[:, None] if counts.ndim == 2 else base
    return table.ravel()[index]


def _payload_column_param() -> Param:
    return Param(
        "column",
        "payload",
        "payload column to read: payload (both directions in session order), src2dst_payload, dst2src_payload",
        _choice_param(*PAYLOAD_COLUMNS),
    )


# --- the representations -------------------------------------------------------------------------


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
        data, starts, lengths = binary_parts(_column(flows, self.params["column"]))
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
        Param("max_bytes", 784, "payload bytes counted (the first ones)", _int_param(2), int),
    )
    needs_payload = True

    def required_columns(self) -> tuple[str, ...]:
        return (self.params["column"],)

    def _block_rows(self) -> int:
        # Temporaries grow with max_bytes, so blocks shrink to keep them near the payload case.
        return max(1, self.block_rows * IMAGE_PIXELS // max(self.params["max_bytes"], IMAGE_PIXELS))

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        data, starts, lengths = binary_parts(_column(flows, self.params["column"]))
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
        Param("max_packets", 64, "first packets of the flow drawn", _int_param(1), int),
        Param("size", "ip", "packet size: ip (IP total length) or payload (L4 payload length)", _choice_param("ip", "payload")),
        Param("size_max", 1500, "bytes spanned by the 14 size buckets (larger packets count in the last)", _int_param(14), int),
        Param("time_window_ms", 10000.0, "time span drawn, ms after the first packet",
              lambda n, v: check_positive_number(n, v), float),
        Param("time_axis", "log", "time axis: log (ln(1 + t)) or linear", _choice_param("log", "linear")),
    )

    def required_columns(self) -> tuple[str, ...]:
        size_column = "packet_ip_bytes" if self.params["size"] == "ip" else "packet_payload_bytes"
        return ("packet_time_ms", "packet_direction", size_column)

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        time_col, direction_col, size_col = self.required_columns()
        times, t_starts, t_lengths = list_parts(_column(flows, time_col))
        directions, d_starts, d_lengths = list_parts(_column(flows, direction_col))
        sizes, s_starts, s_lengths = list_parts(_column(flows, size_col))
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
