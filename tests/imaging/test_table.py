"""Images table: dedup and conflicts, split groups, Parquet round trips, metadata, the loader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pcapvision import __version__
from pcapvision.errors import DataContractError, InputNotFoundError, ParameterError
from pcapvision.imaging import (
    IMAGES_SCHEMA,
    get_representation,
    image_flows,
    load_images,
    render_flows,
    summary_path,
)
from pcapvision.io import metadata_from_schema, sha256_file, write_parquet_atomic
from tests.imaging.helpers import make_flow, make_flows_table


def distinct_flows(n, start=0, **fields):
    """Flows whose payloads (random, 6 bytes) differ, so every representation's images differ."""
    rng = np.random.default_rng(start)
    return [make_flow(i, payload=rng.integers(1, 256, 6, dtype=np.uint8).tobytes(), **fields)
            for i in range(start, start + n)]


def test_render_flows_columns_and_values():
    rows = distinct_flows(3) + [make_flow(3, payload=b"")]
    table, summary = render_flows(make_flows_table(rows), "payload")
    assert table.schema.remove_metadata() == IMAGES_SCHEMA
    assert table.column("flow_id").to_pylist() == [f"{i:016x}" for i in range(3)]
    assert table.column("payload_length").to_pylist() == [6, 6, 6]
    assert table.column("split_group").to_pylist() == [rows[0]["source_sha256"]] * 3
    import hashlib

    first = table.column("image").to_pylist()[0]
    assert first[:6] == rows[0]["payload"] and len(first) == 784
    assert table.column("image_sha256").to_pylist()[0] == hashlib.sha256(first).hexdigest()
    assert (summary.rows_in, summary.rows_rendered, summary.rows_out) == (4, 3, 3)
    assert summary.skipped == {"no payload": 1}
    assert summary.class_counts == {"normal": 3}
    meta = metadata_from_schema(table.schema)
    assert meta["stage"] == "image" and meta["representation"] == "payload"
    assert meta["representation_params"] == {"column": "payload"} and meta["pcapvision_version"] == __version__
    assert meta["summary"]["skipped"] == {"no payload": 1}


def test_dedup_keeps_first_and_drops_conflicts():
    same = b"same-bytes"
    rows = [
        make_flow(0, payload=same, source_sha256="a" * 64),
        make_flow(1, payload=same, source_sha256="b" * 64),  # duplicate from another capture
        make_flow(2, payload=same, source_sha256="a" * 64),  # duplicate, same capture
        make_flow(3, payload=b"clash", label="normal"),
        make_flow(4, payload=b"clash", label="malicious"),  # same image, another label
        make_flow(5, payload=b"clash", label="normal"),
        make_flow(6, payload=b"fam", family="web"),
        make_flow(7, payload=b"fam", family="mail"),  # same label, another family: a conflict too
        make_flow(8, payload=b"unique"),
    ]
    table, summary = render_flows(make_flows_table(rows), "payload")
    assert table.column("flow_id").to_pylist() == [f"{0:016x}", f"{8:016x}"]
    assert summary.duplicates == 2 and summary.duplicates_removed == 2
    assert summary.duplicates_across_groups == 1
    assert summary.conflicting_images == 2 and summary.conflicting_rows == 5
    assert summary.conflicting_rows_dropped == 5
    example = next(e for e in summary.conflict_examples if len(e["flow_ids"]) == 3)
    assert example["labels"] == ["malicious/web", "normal/web"]
    assert "dropped" in summary.conflict_policy

    kept, loose = render_flows(make_flows_table(rows), "payload", dedup=False)
    assert kept.num_rows == len(rows)
    assert (loose.duplicates, loose.duplicates_removed, loose.conflicting_images, loose.conflicting_rows_dropped) == (2, 0, 2, 0)


def test_null_labels_dedup_as_one_class():
    rows = [make_flow(i, payload=b"x", label=None, family=None) for i in range(3)]
    table, summary = render_flows(make_flows_table(rows), "payload")
    assert table.num_rows == 1 and summary.conflicting_images == 0 and summary.class_counts == {"": 1}


def test_split_group_capture_falls_back_to_source_file_and_server_uses_dst_ip():
    rows = distinct_flows(2)
    rows[1]["source_sha256"] = None
    rows[1]["dst_ip"] = "2001:db8::7"
    table, _ = render_flows(make_flows_table(rows), "payload")
    assert table.column("split_group").to_pylist() == [rows[0]["source_sha256"], "capture-a.pcap"]
    table, _ = render_flows(make_flows_table(rows), "payload", group_by="server")
    assert table.column("split_group").to_pylist() == ["10.0.0.2", "2001:db8::7"]
    with pytest.raises(ParameterError, match="group_by"):
        render_flows(make_flows_table(rows), "payload", group_by="host")
    no_source = make_flows_table(rows).drop_columns(["source_sha256", "source_file"])
    with pytest.raises(DataContractError, match="source_sha256"):
        render_flows(no_source, "payload")


def test_flowpic_needs_no_payload_column():
    table = make_flows_table(distinct_flows(2, packets=[(0.0, 0, 5)])).drop_columns(["payload", "src2dst_payload", "dst2src_payload"])
    out, summary = render_flows(table, "flowpic", dedup=False)
    assert out.num_rows == 2 and out.column("payload_length").null_count == 2


def write_flows(tmp_path, rows, name="flows.parquet"):
    path = tmp_path / name
    write_parquet_atomic(make_flows_table(rows), path, {"stage": "ingest", "params": {"max_bytes": 4096}})
    return path


def test_parquet_round_trip_file(tmp_path):
    rows = distinct_flows(20) + [make_flow(99, payload=b"", label="malicious")]
    flows = write_flows(tmp_path, rows)
    out = tmp_path / "images.parquet"
    summary = image_flows(flows, out, "byte-distribution", {"max_bytes": 64}, quiet=True)
    x, y, meta = load_images(out)
    expected, _, _ = get_representation("byte-distribution", {"max_bytes": 64}).render(make_flows_table(rows[:20]))
    assert x.dtype == np.float32 and x.shape == (20, 28, 28, 1)
    assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), expected)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and np.allclose(x * 255, np.rint(x * 255), atol=1e-4)
    assert y.tolist() == ["normal"] * 20
    assert meta.representation == "byte-distribution" and meta.params == {"column": "payload", "max_bytes": 64}
    assert meta.schema["input"]["sha256"] == sha256_file(flows)
    assert meta.schema["input"]["flows_params"] == {"max_bytes": 4096}
    assert list(meta.columns["flow_id"]) == [f"{i:016x}" for i in range(20)]
    assert "image" not in meta.columns
    stored = json.loads(summary_path(out).read_text())
    assert stored == summary.to_dict() == meta.schema["summary"]
    assert stored["skipped"] == {"no payload": 1} and stored["class_counts"] == {"normal": 20}
    assert pq.read_schema(out).field("image").type == pa.binary(784)


def test_dataset_directory_input_and_output(tmp_path):
    rows = distinct_flows(30)
    flows_dir = tmp_path / "flows"
    write_flows(flows_dir, rows[:10], "aaaa.parquet")
    write_flows(flows_dir, rows[10:], "bbbb.parquet")
    (flows_dir / "_ignored.parquet").write_bytes(b"not parquet")
    out = tmp_path / "images.parquet"
    image_flows(flows_dir, out, "payload", quiet=True)
    x, y, meta = load_images(out)
    assert len(x) == 30 and list(meta.columns["flow_id"]) == [r["flow_id"] for r in rows]
    assert len(meta.schema["input"]["sha256"]) == 64 and meta.schema["input"]["files"] == 2

    # An images dataset directory: parts are concatenated, metadata read from the files themselves.
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    table = pq.read_table(out)
    pq.write_table(table.slice(0, 12), images_dir / "part-0.parquet")
    pq.write_table(table.slice(12), images_dir / "part-1.parquet")
    x2, y2, meta2 = load_images(images_dir)
    assert np.array_equal(x2, x) and meta2.params == meta.params and meta2.schema["stage"] == "image"


def test_metadata_survives_pyarrow_dataset(tmp_path):
    flows = write_flows(tmp_path, distinct_flows(5))
    out = tmp_path / "images.parquet"
    image_flows(flows, out, "flowpic", dedup=False, quiet=True)  # identical packet lists: keep all 5
    stored = metadata_from_schema(pq.read_schema(out))
    scanned = ds.dataset(out, format="parquet").to_table()
    assert metadata_from_schema(scanned.schema) == stored
    assert scanned.schema.field("image").type == pa.binary(784)
    # Re-written through pyarrow.dataset into a directory, the loader still finds it.
    ds.write_dataset(scanned, tmp_path / "copy", format="parquet")
    x, _, meta = load_images(tmp_path / "copy")
    assert meta.schema == stored and meta.representation == "flowpic" and x.shape == (5, 28, 28, 1)


def test_load_images_refuses_mixed_parts_and_foreign_tables(tmp_path):
    flows = write_flows(tmp_path, distinct_flows(4))
    image_flows(flows, tmp_path / "mixed" / "a.parquet", "payload", quiet=True)
    image_flows(flows, tmp_path / "mixed" / "b.parquet", "byte-distribution", quiet=True)
    with pytest.raises(DataContractError, match="different representation"):
        load_images(tmp_path / "mixed")
    with pytest.raises(DataContractError, match="not an images table"):
        load_images(flows)
    with pytest.raises(InputNotFoundError):
        load_images(tmp_path / "absent.parquet")
    with pytest.raises(ParameterError, match="target"):
        load_images(tmp_path / "mixed" / "a.parquet", target="flow_id")


def test_load_images_family_target_and_in_memory_table():
    rows = distinct_flows(3)
    rows[1]["family"] = None
    table, _ = render_flows(make_flows_table(rows), "payload")
    x, y, meta = load_images(table, target="family")
    assert y.tolist() == ["web", "", "web"] and x.shape == (3, 28, 28, 1)
    assert meta.representation == "payload"


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "flows.parquet"
    pq.write_table(make_flows_table(distinct_flows(2)).drop_columns(["packet_time_ms", "packet_direction"]), path)
    with pytest.raises(DataContractError) as err:
        image_flows(path, tmp_path / "images.parquet", "flowpic", quiet=True)
    message = str(err.value)
    assert str(path) in message and "packet_time_ms" in message and "packet_direction" in message
    assert not (tmp_path / "images.parquet").exists()
