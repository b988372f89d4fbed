"""The Parquet writer of flows tables: written through a temporary file, capture by capture."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pcapvision.errors import OutputWriteError
from pcapvision.ingest.flowschema import FLOWS_SCHEMA
from pcapvision.io import PARQUET_COMPRESSION, encode_metadata, temp_path_beside, write_error

__all__ = ["FlowsWriter", "row_groups"]

# Dictionary-encode only the columns with repeated values and keep min/max statistics only for
# scalars: hashing or comparing kilobytes of payload per row costs ~20% of the write for nothing.
_DICTIONARY_COLUMNS = ["src_ip", "dst_ip", "end_reason", "source_file", "source_sha256", "label", "family",
                       "label_source", "tls_sni", "tls_version", "tls_ja3", "tls_ja3_hash"]
_STATISTICS_COLUMNS = [f.name for f in FLOWS_SCHEMA if not (pa.types.is_binary(f.type) or pa.types.is_list(f.type))]

# The payload columns (kilobytes per flow, mostly encrypted bytes that barely compress) use zstd
# level -1 instead of the default (1). Encoding and compressing the same row groups 5 times each,
# alternated, into an in-memory sink (min / median CPU s):
#   1 M-packet benchmark capture's flows (25,000, 248 MB): 0.48 / 0.53 -> 0.40 / 0.44, +0.5% bytes;
#   shared captures' flows (5,884, 5.6 MB): 0.106 / 0.108 -> 0.098 / 0.103, +0.8% bytes;
#   sample captures' flows (2,209, 8.9 MB): 0.061 / 0.064 -> 0.049 / 0.052, +0.3% bytes.
# Uncompressed payloads would save more (0.17 / 0.19 s on the benchmark) but cost +8% bytes
# there and +27% / +48% on the sample / shared captures.
_PAYLOAD_COLUMNS = ("payload", "src2dst_payload", "dst2src_payload")
_PAYLOAD_ZSTD_LEVEL = -1


class FlowsWriter:
    """A flows Parquet file written through a temporary file beside it, capture by capture.

    Batches go straight to the file; :meth:`commit` marks the end of a capture, :meth:`rollback`
    drops what was written since (a capture that failed half-way), :meth:`close` stores the
    metadata and renames the file into place, :meth:`abort` removes it. The schema is stored as
    Parquet types only (``store_schema=False``: every FLOWS_SCHEMA type round-trips) so that the
    metadata, which counts what was read, can be written last.
    """

    def __init__(self, path: Path, compression: str = PARQUET_COMPRESSION):
        self.path = Path(path)
        self.compression = compression
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._committed_rows = 0
        self._pending_rows = 0

    def _open(self) -> None:
        self._tmp = temp_path_beside(self.path)
        levels = dict.fromkeys(_PAYLOAD_COLUMNS, _PAYLOAD_ZSTD_LEVEL) if self.compression == "zstd" else None
        self._writer = pq.ParquetWriter(self._tmp, FLOWS_SCHEMA, compression=self.compression,
                                        compression_level=levels, store_schema=False,
                                        use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS)

    def write(self, batch: pa.RecordBatch) -> None:
        with self._writing():
            if self._writer is None:
                self._open()
            if batch.num_rows:
                self._writer.write_batch(batch)
                self._pending_rows += batch.num_rows

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError while writing is the output's (disk full...), never the capture's fault."""
        try:
            yield
        except OutputWriteError:
            raise
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def commit(self) -> None:
        self._committed_rows += self._pending_rows
        self._pending_rows = 0

    def rollback(self) -> None:
        """Forget the rows written since the last commit (rare: rewrites the committed rows)."""
        if not self._pending_rows:
            return
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        broken = self._tmp
        self._open()
        left = self._committed_rows
        for batch in row_groups(broken):
            if left <= 0:
                break
            self._writer.write_batch(batch.slice(0, left))
            left -= min(left, batch.num_rows)
        broken.unlink()
        self._pending_rows = 0

    def close(self, metadata: dict[str, Any]) -> Path:
        """Write the metadata, finish the file and rename it onto ``path``."""
        self.commit()
        with self._writing():
            if self._writer is None:
                self._open()
            self._writer.add_key_value_metadata(encode_metadata(metadata))
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def row_groups(path: Path) -> Iterator[pa.RecordBatch]:
    """The rows of a Parquet file we wrote, one row group (one bounded batch) at a time."""
    parquet = pq.ParquetFile(path)
    for i in range(parquet.num_row_groups):
        yield from parquet.read_row_group(i).to_batches()
