"""The flows table that flow assembly emits: its Arrow schema and the ``end_reason`` codes.

Each column is described in ``docs/contracts.md`` (the pipeline adds ``flow_id``, the source and
the labels, see :data:`pcapvision.ingest.pipeline.FLOWS_SCHEMA`).
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["FLOW_COLUMNS", "FLOW_SCHEMA", "FLOW_SCHEMA_FIELDS", "END_REASONS"]

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
