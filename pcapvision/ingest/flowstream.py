"""One capture -> a stream of flows-table record batches (or one table in memory).

The capture flows through ``read_packets`` (chunks of decoded packets) -> ``assemble_flow_batches``
(Arrow batches of the flows that ended, each of at most :data:`OUTPUT_BATCH_FLOWS` flows and about
:data:`OUTPUT_BATCH_BYTES` payload bytes) -> the same batches stamped with ``flow_id``/``source_*``
and labels. Memory is bounded by the open flows plus one chunk, never a whole capture.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from pcapvision.ingest.arrays import repeated_string_array, string_array, to_numpy
from pcapvision.ingest.assembler import assemble_flow_batches
from pcapvision.ingest.flowid import flow_ids
from pcapvision.ingest.flowschema import FLOWS_SCHEMA, STAGE
from pcapvision.ingest.labels import Labeler
from pcapvision.ingest.options import IngestOptions, ingest_params
from pcapvision.ingest.packets import PacketBatch
from pcapvision.ingest.readers import read_packets
from pcapvision.ingest.summary import CaptureStats
from pcapvision.io import make_metadata, printable, sha256_file, with_metadata

__all__ = ["OUTPUT_BATCH_BYTES", "OUTPUT_BATCH_FLOWS", "iter_flow_tables", "read_flows", "untraced_heap"]

# A record batch (and Parquet row group) closes at this many flows or payload bytes, whichever
# comes first: 4096 flows of full 3 x 4 KiB payloads would hold ~100 MB in flight twice over.
OUTPUT_BATCH_FLOWS = 4096
OUTPUT_BATCH_BYTES = 8 << 20


def _to_flows_schema(flows: pa.RecordBatch, source_file: str, source_sha256: str,
                     labeler: Labeler | None) -> pa.RecordBatch:
    """Add the pipeline's columns (ids, source, labels) to a batch of the assembler's flows."""
    n = flows.num_rows
    added = {
        "flow_id": string_array(flow_ids(flows, source_sha256)),
        "source_file": repeated_string_array(source_file, n),
        "source_sha256": repeated_string_array(source_sha256, n),
        "label": pa.nulls(n, pa.string()),
        "family": pa.nulls(n, pa.string()),
        "label_source": pa.nulls(n, pa.string()),
    }
    columns = [added[f.name] if f.name in added else flows.column(f.name) for f in FLOWS_SCHEMA]
    batch = pa.RecordBatch.from_arrays(columns, schema=FLOWS_SCHEMA)
    if labeler is not None:
        batch = labeler.apply(batch, source_file)
    return batch


def iter_flow_tables(
    path: str | os.PathLike[str],
    options: IngestOptions | None = None,
    labeler: Labeler | None = None,
    *,
    source_file: str | None = None,
    source_sha256: str | None = None,
    stats: CaptureStats | None = None,
    on_chunk: Callable[[PacketBatch], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the flows of one capture as record batches of :data:`FLOWS_SCHEMA` (no metadata).

    ``source_file`` defaults to ``path`` as given; ``stats``, when given, is filled in as the
    capture is read; ``on_chunk`` sees every packet chunk (progress bars).
    """
    options = options or IngestOptions()
    source_file = printable(os.fspath(path)) if source_file is None else source_file
    source_sha256 = source_sha256 or sha256_file(path)
    if stats is None:
        stats = CaptureStats(source_file, source_sha256)
    stats.bytes_read = os.path.getsize(path)

    def counted(batches: Iterable[PacketBatch]) -> Iterator[PacketBatch]:
        for batch in batches:
            stats.packets += len(batch)
            stats.packets_skipped.update(batch.skipped)
            stats.frames_decoded_by.update(batch.decoded_by)
            if on_chunk is not None:
                on_chunk(batch)
            yield batch

    packets = read_packets(path, reader=options.reader, chunk_packets=options.chunk_packets)
    flows_stream = assemble_flow_batches(counted(packets), options.flow_options(),
                                         flush_flows=OUTPUT_BATCH_FLOWS, flush_bytes=OUTPUT_BATCH_BYTES)
    for flows in flows_stream:  # already bounded: OUTPUT_BATCH_FLOWS flows, ~OUTPUT_BATCH_BYTES
        missed = to_numpy(flows.column("src2dst_missed_bytes")) + to_numpy(flows.column("dst2src_missed_bytes"))
        stats.tcp_flows_with_holes += int(np.count_nonzero(missed))
        stats.tcp_missed_bytes += int(missed.sum())
        batch = _to_flows_schema(flows, source_file, source_sha256, labeler)
        stats.flows += batch.num_rows
        yield batch


@contextlib.contextmanager
def untraced_heap() -> Iterator[None]:
    """Keep the objects alive now (modules, caches: ~70,000) out of the garbage collector's reach
    while a capture is read.

    Ingest allocates objects per flow, which triggers full collections, each traversing every
    object of the imported libraries: 15-20% of the assembler's CPU. Frozen objects that die
    meanwhile are collected after ``gc.unfreeze()``. Left alone when the caller froze objects
    already (unfreezing would undo that too).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def read_flows(
    path: str | os.PathLike[str], options: IngestOptions | None = None, *, labeler: Labeler | None = None
) -> pa.Table:
    """One capture -> its flows table in memory, with pcapvision schema metadata."""
    options = options or IngestOptions()
    sha = sha256_file(path)
    stats = CaptureStats(printable(os.fspath(path)), sha)
    with untraced_heap():
        batches = list(iter_flow_tables(path, options, labeler, source_sha256=sha, stats=stats))
    table = pa.Table.from_batches(batches, schema=FLOWS_SCHEMA)
    return with_metadata(table, make_metadata(STAGE, ingest_params(options, labeler), sources=[stats.to_dict()]))
