"""Image representations of flows: the base class, the registry and the column helpers.

Each representation (one module per representation family in this package) is a small class
registered in :data:`REPRESENTATIONS` under its name. It declares its parameters (with defaults
and checks) and the flows-table columns it reads, and renders a batch of flows into
``(N, 28, 28)`` uint8 images with numpy only (no per-flow Python loop), plus a mask of the rows
it could render and the reason the others were skipped.

No representation reads addresses, ports, absolute timestamps, TTL, IP ID or any capture header:
they see only the application payload bytes, or per-packet sizes, directions, TCP flags and
times relative to the flow's first packet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError, ParameterError
from pcapvision.validation import check_choice, check_int

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


def int_param(min_value: int, max_value: int | None = None) -> Callable[[str, Any], int]:
    return lambda name, value: check_int(name, value, min_value=min_value, max_value=max_value)


def choice_param(*choices: str) -> Callable[[str, Any], str]:
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


def column_array(flows: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
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
