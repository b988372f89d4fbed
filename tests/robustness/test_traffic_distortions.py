from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pcapvision.ingest import FLOWS_SCHEMA
from pcapvision.robustness.traffic_distortions import (
    RETRANSMIT_DELAY_MS,
    TRAFFIC_DISTORTIONS,
    distort_flows,
    pad_tls_records,
)

SCHEMA = pa.schema([FLOWS_SCHEMA.field(name) for name in (
    "flow_id", "payload", "src2dst_payload", "dst2src_payload", "packet_time_ms", "packet_direction",
    "packet_payload_bytes", "packet_ip_bytes", "packet_tcp_flags")])


def record(rtype: int, body: bytes) -> bytes:
    return bytes([rtype, 3, 3]) + len(body).to_bytes(2, "big") + body


def flows_table() -> pa.Table:
    hello = record(22, b"H" * 40)
    app = record(23, b"A" * 30) + record(23, b"B" * 20)
    rows = []
    for i in range(4):
        rows.append({
            "flow_id": f"f{i}",
            "payload": hello + app,
            "src2dst_payload": hello + app,
            "dst2src_payload": b"",
            "packet_time_ms": [0.0, 1.0, 2.0, 30.0, 31.0, 60.0],
            "packet_direction": [0, 1, 0, 0, 1, 0],
            "packet_payload_bytes": [0, 0, 0, 45, 0, 60],
            "packet_ip_bytes": [40, 40, 40, 85, 40, 100],
            "packet_tcp_flags": [2, 18, 16, 24, 16, 24],
        })
    return pa.Table.from_pylist(rows, schema=SCHEMA)


@pytest.mark.parametrize("name", sorted(TRAFFIC_DISTORTIONS))
def test_every_traffic_distortion_keeps_the_schema_and_is_seeded(name):
    flows = flows_table()
    for severity in (1, 5):
        out = distort_flows(flows, name, severity, seed=1)
        assert out.schema == flows.schema and out.num_rows == flows.num_rows
        assert out.equals(distort_flows(flows, name, severity, seed=1))
        for row in out.to_pylist():
            times = row["packet_time_ms"]
            assert times == sorted(times) and min(times) >= 0
            assert len({len(row[c]) for c in SCHEMA.names if c.startswith("packet_")}) == 1


def test_payload_shift_prepends_bytes_and_keeps_the_cap():
    flows = flows_table()
    cap = len(flows.column("payload")[0].as_py())
    out = distort_flows(flows, "payload_shift", 3).to_pylist()[0]  # 4 bytes
    original = flows.to_pylist()[0]["payload"]
    assert len(out["payload"]) == cap
    assert out["payload"][4:] == original[:-4]


def test_random_padding_appends_one_packet_and_bytes():
    flows = flows_table()
    out = distort_flows(flows, "random_padding", 1).to_pylist()[0]
    assert len(out["packet_time_ms"]) == 7 and out["packet_payload_bytes"][-1] == 16


def test_tcp_events_leave_the_reassembled_payload_alone():
    flows = flows_table()
    for name in ("packet_drop", "packet_duplication", "packet_reordering", "timing_jitter"):
        out = distort_flows(flows, name, 5)
        assert out.column("payload").equals(flows.column("payload")), name


def test_packet_drop_becomes_a_late_retransmission():
    flows = flows_table()
    out = distort_flows(flows, "packet_drop", 5, seed=4).to_pylist()
    original = flows.to_pylist()[0]["packet_time_ms"]
    moved = [t for row in out for t in row["packet_time_ms"] if t not in original]
    assert moved and all(t - RETRANSMIT_DELAY_MS in original for t in moved)


def test_pad_tls_records_grows_application_data_only():
    rng = np.random.default_rng(0)
    data = record(22, b"H" * 10) + record(23, b"A" * 5) + record(23, b"B" * 3) + b"\x17\x03"  # cut-off tail
    padded, n = pad_tls_records(data, 4, rng)
    assert n == 2
    assert padded[:15] == data[:15]  # the handshake record is untouched
    assert padded[15:20] == bytes([23, 3, 3, 0, 9]) and padded[20:25] == b"A" * 5
    assert padded[29:34] == bytes([23, 3, 3, 0, 7])
    assert padded.endswith(b"\x17\x03") and len(padded) == len(data) + 8


def test_pad_tls_records_updates_the_length_of_a_record_cut_by_the_cap():
    data = record(23, b"C" * 10)[:9]  # header + 4 of 10 body bytes
    padded, n = pad_tls_records(data, 6, np.random.default_rng(0))
    assert n == 1
    assert padded == bytes([23, 3, 3, 0, 16]) + b"C" * 4
