"""The flows table that flow assembly emits: its Arrow schema and the ``end_reason`` codes.

:data:`FLOW_SCHEMA` holds the assembler's columns; :data:`FLOWS_SCHEMA` is the flows table the
pipeline writes: those columns (all nullable) between ``flow_id`` and the source and label columns.
Each column is described in ``docs/contracts.md``.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["FLOW_COLUMNS", "FLOW_SCHEMA", "FLOW_SCHEMA_FIELDS", "FLOWS_SCHEMA", "END_REASONS", "STAGE"]

STAGE = "ingest"  # the stage named in the flows table's metadata

FLOW_SCHEMA_FIELDS: list[pa.Field] = [
    pa.field("community_id", pa.string(), nullable=False),
    pa.field("src_ip", pa.string(), nullable=False),
    pa.field("dst_ip", pa.string(), nullable=False),
    pa.field("src_port", pa.uint16(), nullable=False),
    pa.field("dst_port", pa.uint16(), nullable=False),
    pa.field("protocol", pa.uint8(), nullable=False),
    pa.field("ip_version", pa.uint8(), nullable=False),
    pa.field("vlan_id", pa.uint16(), nullable=False),
    pa.field("first_seen_ns", pa.int64(), nullable=False),
    pa.field("last_seen_ns", pa.int64(), nullable=False),
    pa.field("duration_ms", pa.float64(), nullable=False),
    pa.field("src2dst_packets", pa.int64(), nullable=False),
    pa.field("dst2src_packets", pa.int64(), nullable=False),
    pa.field("bidirectional_packets", pa.int64(), nullable=False),
    pa.field("src2dst_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_bytes", pa.int64(), nullable=False),
    pa.field("bidirectional_bytes", pa.int64(), nullable=False),
    pa.field("src2dst_payload_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_payload_bytes", pa.int64(), nullable=False),
    pa.field("src2dst_missed_bytes", pa.int64(), nullable=False),
    pa.field("dst2src_missed_bytes", pa.int64(), nullable=False),
    pa.field("payload", pa.binary(), nullable=False),
    pa.field("src2dst_payload", pa.binary(), nullable=False),
    pa.field("dst2src_payload", pa.binary(), nullable=False),
    pa.field("src2dst_payload_holes", pa.list_(pa.int32()), nullable=False),
    pa.field("dst2src_payload_holes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_time_ms", pa.list_(pa.float64()), nullable=False),
    pa.field("packet_direction", pa.list_(pa.uint8()), nullable=False),
    pa.field("packet_payload_bytes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_ip_bytes", pa.list_(pa.int32()), nullable=False),
    pa.field("packet_tcp_flags", pa.list_(pa.uint8()), nullable=False),
    pa.field("tls_sni", pa.string(), nullable=True),
    pa.field("tls_version", pa.string(), nullable=True),
    pa.field("tls_ja3", pa.string(), nullable=True),
    pa.field("tls_ja3_hash", pa.string(), nullable=True),
    pa.field("end_reason", pa.string(), nullable=False),
]
FLOW_COLUMNS: list[str] = [f.name for f in FLOW_SCHEMA_FIELDS]
FLOW_SCHEMA = pa.schema(FLOW_SCHEMA_FIELDS)

# end_reason codes; the closure codes double as the TCP closure state of an open flow.
END_OPEN, END_FIN, END_RST, END_IDLE, END_ACTIVE, END_EOC = 0, 1, 2, 3, 4, 5
END_REASONS = ("", "fin", "rst", "idle_timeout", "active_timeout", "end_of_capture")

# The flows-table contract (docs/contracts.md): the assembler's columns between the id and the
# provenance/label columns the pipeline adds. Every field is nullable in the file.
FLOWS_SCHEMA = pa.schema([
    pa.field("flow_id", pa.string()),
    *(field.with_nullable(True) for field in FLOW_SCHEMA_FIELDS),
    pa.field("source_file", pa.string()),
    pa.field("source_sha256", pa.string()),
    pa.field("label", pa.string()),
    pa.field("family", pa.string()),
    pa.field("label_source", pa.string()),
])
"""The flows table's columns and exact types (``docs/contracts.md``)."""

