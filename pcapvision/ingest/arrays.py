"""Arrow arrays from numpy arrays and lists of strings, and back, through their buffers.

``pa.array`` and ``Array.to_numpy`` import pandas on their first call, whatever they convert
(pyarrow checks for pandas objects): ~0.3 CPU s and ~60 MB that every ingest process and worker
paid for a library ingest never uses. Built from and read through buffers, the flows table's
columns need neither (a test checks that ingest leaves pandas unloaded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["numeric_array", "repeated_string_array", "string_array", "to_numpy"]


def numeric_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """A null-free Arrow array of a fixed-width ``arrow_type`` holding ``values`` (cast as needed)."""
    values = np.ascontiguousarray(values, dtype=np.dtype(arrow_type.to_pandas_dtype()))
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def string_array(values: Sequence[str | None]) -> pa.StringArray:
    """An Arrow string array of ``values`` (None is null)."""
    n = len(values)
    validity = None
    if None in values:
        valid = np.fromiter((v is not None for v in values), bool, n)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        values = [v if v is not None else "" for v in values]
    joined = "".join(values)
    data = joined.encode()
    if len(data) == len(joined):  # ASCII (addresses, ids, names): byte lengths are the text lengths
        lengths = np.fromiter(map(len, values), np.int64, n)
    else:
        encoded = [v.encode() for v in values]
        lengths = np.fromiter(map(len, encoded), np.int64, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{offsets[-1]:,} bytes of text: more than an Arrow string array holds (2 GiB)")
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def repeated_string_array(value: str, n: int) -> pa.StringArray:
    """An Arrow string array of ``n`` times ``value``."""
    encoded = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(encoded))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(encoded * n)])


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``values`` as numpy: a read-only view of a null-free fixed-width array, else an object array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if pa.types.is_primitive(kind) and not pa.types.is_boolean(kind) and not values.null_count:
        dtype = np.dtype(kind.to_pandas_dtype())
        return np.frombuffer(values.buffers()[1], dtype, count=len(values), offset=values.offset * dtype.itemsize)
    out = np.empty(len(values), object)
    out[:] = values.to_pylist()
    return out
