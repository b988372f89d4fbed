"""The ingest pipeline: options, input discovery, the flows table, single-file and dataset outputs."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from pcapvision.errors import InputNotFoundError, ParameterError
from pcapvision.ingest import flowstream, pipeline
from pcapvision.ingest.labels import Labeler
from pcapvision.ingest import (
    FLOWS_SCHEMA,
    IngestOptions,
    discover_captures,
    find_captures,
    ingest,
    iter_flow_tables,
    read_flows,
)
from pcapvision.ingest.flowid import flow_id, flow_ids
from pcapvision.ingest.summary import CaptureStats
from pcapvision.io import metadata_from_schema, sha256_file

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would ARP for dst


def udp_capture(path: Path, n_flows: int, *, base_port: int = 10000, t0: float = T0) -> Path:
    """``n_flows`` UDP flows of two packets each (request, response), 1 ms apart."""
    packets = []
    for i in range(n_flows):
        for k, (src, dst, sport, dport) in enumerate((("10.0.0.1", "10.0.0.2", base_port + i, 53),
                                                     ("10.0.0.2", "10.0.0.1", 53, base_port + i))):
            p = ETH / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / (b"q%d" % i)
            p.time = t0 + i * 0.01 + k * 0.001
            packets.append(p)
    wrpcap(str(path), packets)
    return path


def tcp_capture(path: Path) -> Path:
    """One TCP connection: handshake, 5 bytes each way, FIN close."""
    c, s = ("192.0.2.10", 40000), ("198.51.100.7", 443)
    steps = [(c, s, "S", 100, b""), (s, c, "SA", 500, b""), (c, s, "A", 101, b""), (c, s, "PA", 101, b"hello"),
             (s, c, "PA", 501, b"world"), (c, s, "FA", 106, b""), (s, c, "FA", 506, b""), (c, s, "A", 107, b"")]
    packets = []
    for i, ((sip, sport), (dip, dport), flags, seq, data) in enumerate(steps):
        p = ETH / IP(src=sip, dst=dip) / TCP(sport=sport, dport=dport, flags=flags, seq=seq) / data
        p.time = T0 + 100 + i * 0.01
        packets.append(p)
    wrpcap(str(path), packets)
    return path


@pytest.fixture()
def captures(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    out = {
        "udp": udp_capture(d / "udp.pcap", 3),
        "tcp": tcp_capture(d / "sub" / "tcp.pcap"),
        "bad": d / "notes.pcap",
    }
    out["bad"].write_bytes(b"this is not a capture, just text\n" * 4)
    (d / "README.txt").write_text("not picked up from a directory")
    return out


# --- schema and options --------------------------------------------------------------------------
def test_schema_matches_contracts_doc() -> None:
    """docs/contracts.md's flows table lists exactly FLOWS_SCHEMA's columns, in order, with its types."""
    text = (REPO / "docs" / "contracts.md").read_text()
    section = text.split("## Flows table", 1)[1].split("\n## ", 1)[0]
    documented: list[tuple[str, str]] = []
    for line in section.splitlines():
        m = re.match(r"\| (`[^|]+`) \| ([^|]+) \|", line)
        if m:
            type_text = m.group(2).strip().removesuffix(", null")
            documented += [(name.strip("` "), type_text) for name in m.group(1).split(",")]
    names = {"string": pa.string(), "binary": pa.binary(), "uint8": pa.uint8(), "uint16": pa.uint16(),
             "int64": pa.int64(), "float64": pa.float64(), "list<float64>": pa.list_(pa.float64()),
             "list<uint8>": pa.list_(pa.uint8()), "list<int32>": pa.list_(pa.int32())}
    assert [n for n, _ in documented] == FLOWS_SCHEMA.names
    for name, type_text in documented:
        assert FLOWS_SCHEMA.field(name).type == names[type_text], name


def test_options_validate_and_serialise() -> None:
    options = IngestOptions(idle_timeout_s=30, max_bytes=100)
    assert options.to_dict() == {"idle_timeout_s": 30.0, "active_timeout_s": 1800.0, "max_bytes": 100,
                                 "max_packets": 64, "on_hole": "stop", "reader": "auto", "chunk_packets": 65536}
    assert options.flow_options().idle_timeout_s == 30.0
    with pytest.raises(ParameterError, match=r"The 'idle_timeout_s' parameter must be a positive number. Got -1"):
        IngestOptions(idle_timeout_s=-1)
    with pytest.raises(ParameterError, match=r"The 'reader' parameter must be one of \{'auto', 'dpkt', 'scapy'\}"):
        IngestOptions(reader="tshark")
    with pytest.raises(ParameterError, match=r"The 'chunk_packets' parameter must be a positive int. Got 0"):
        IngestOptions(chunk_packets=0)


# --- discovery -----------------------------------------------------------------------------------
def test_discover_files_directories_globs(captures: dict[str, Path]) -> None:
    root = captures["udp"].parent
    # A directory: capture suffixes only, recursively, sorted; README.txt is not picked up.
    assert discover_captures([root]) == sorted([captures["udp"], captures["bad"], captures["tcp"]])
    # Globs are expanded here too (for shells that do not), files named explicitly are taken as is.
    assert discover_captures([str(root / "**" / "t*.pcap")]) == [captures["tcp"]]
    assert discover_captures([root / "README.txt"]) == [root / "README.txt"]
    # Each file once, at its first mention.
    assert discover_captures([captures["tcp"], root]) == [captures["tcp"], captures["bad"], captures["udp"]]


def test_discover_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"nope.pcap: no such file or directory"):
        discover_captures([tmp_path / "nope.pcap"])
    with pytest.raises(InputNotFoundError, match=r"\*.pcapng: no file matches this pattern"):
        discover_captures([str(tmp_path / "*.pcapng")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match=r"empty: directory holds no capture files"):
        discover_captures([tmp_path / "empty"])


def test_a_missing_input_among_others_fails_alone(captures: dict[str, Path], tmp_path: Path) -> None:
    # A batch reads every input it can and lists the others as failed files (exit code 1 in the CLI).
    gone, pattern = tmp_path / "gone.pcap", str(tmp_path / "*.pcapng")
    found, problems = find_captures([captures["tcp"], gone, pattern])
    assert found == [captures["tcp"]] and [text for text, _ in problems] == [str(gone), pattern]
    summary = ingest([captures["tcp"], gone, pattern], tmp_path / "flows.parquet")
    assert summary.files_ok == 1 and pq.read_table(tmp_path / "flows.parquet").num_rows == 1
    assert summary.files_failed == [(str(gone), "no such file or directory"),
                                    (pattern, "no file matches this pattern")]
    assert f"failed: {gone}: no such file or directory" in summary.format()


# --- one capture -----------------------------------------------------------------------------------
def test_read_flows_table(captures: dict[str, Path]) -> None:
    path = captures["tcp"]
    table = read_flows(path, IngestOptions(max_bytes=64))
    assert table.schema.equals(FLOWS_SCHEMA, check_metadata=False)
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    sha = sha256_file(path)
    assert row["source_file"] == str(path)
    assert row["source_sha256"] == sha
    expected_id = hashlib.sha256(
        f"{sha}|6|192.0.2.10|40000|198.51.100.7|443|{row['first_seen_ns']}".encode()).hexdigest()[:16]
    assert row["flow_id"] == expected_id
    assert (row["src_ip"], row["src_port"], row["payload"], row["end_reason"]) == ("192.0.2.10", 40000,
                                                                                   b"helloworld", "fin")
    assert (row["label"], row["family"], row["label_source"]) == (None, None, None)
    meta = metadata_from_schema(table.schema)
    assert meta["stage"] == "ingest"
    assert meta["params"]["max_bytes"] == 64 and meta["params"]["labels"] is None
    assert meta["sources"][0]["packets"] == 8 and meta["sources"][0]["flows"] == 1
    assert "pyarrow" in meta["library_versions"]


def test_flow_id_is_direction_free_and_deterministic() -> None:
    a = flow_id("ab" * 32, "10.0.0.2", 80, "10.0.0.1", 5000, 6, 123)
    b = flow_id("ab" * 32, "10.0.0.1", 5000, "10.0.0.2", 80, 6, 123)
    assert a == b and re.fullmatch(r"[0-9a-f]{16}", a)
    assert a != flow_id("ab" * 32, "10.0.0.1", 5000, "10.0.0.2", 80, 6, 124)
    assert a != flow_id("cd" * 32, "10.0.0.1", 5000, "10.0.0.2", 80, 6, 123)
    # Endpoints order by address bytes, not text: 10.0.0.10 sorts after 10.0.0.9.
    text = f"{'ab' * 32}|17|10.0.0.9|1|10.0.0.10|2|5"
    assert flow_id("ab" * 32, "10.0.0.10", 2, "10.0.0.9", 1, 17, 5) == hashlib.sha256(text.encode()).hexdigest()[:16]


_ADDRESSES = st.one_of(st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))),
                       st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))),
                       st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", "::ffff:10.0.0.1"]))
_ENDPOINT_PAIRS = st.one_of(st.tuples(_ADDRESSES, _ADDRESSES), _ADDRESSES.map(lambda a: (a, a)))


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(_ENDPOINT_PAIRS, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 255),
                          st.integers(-2**62, 2**62), st.sampled_from([0, 0, 1, 4094])),
                min_size=1, max_size=30))
def test_flow_ids_of_a_batch_equal_flow_id_of_each_row(rows) -> None:
    columns = {"src_ip": [r[0][0] for r in rows], "dst_ip": [r[0][1] for r in rows],
               "src_port": pa.array([r[1] for r in rows], pa.uint16()), "dst_port": pa.array([r[2] for r in rows], pa.uint16()),
               "protocol": pa.array([r[3] for r in rows], pa.uint8()), "first_seen_ns": pa.array([r[4] for r in rows], pa.int64()),
               "vlan_id": pa.array([r[5] for r in rows], pa.uint16())}
    batch = pa.RecordBatch.from_pydict(columns).slice(0)  # the batch function reads Arrow buffers
    expected = [flow_id("ab" * 32, r[0][0], r[1], r[0][1], r[2], r[3], r[4], r[5]) for r in rows]
    assert flow_ids(batch, "ab" * 32) == expected
    if len(rows) > 1:  # a slice starts at an offset into the buffers
        assert flow_ids(batch.slice(1), "ab" * 32) == expected[1:]


def test_streaming_batches_are_bounded(captures: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    path = udp_capture(tmp_path / "many.pcap", 25)
    monkeypatch.setattr(flowstream, "OUTPUT_BATCH_FLOWS", 4)
    stats = CaptureStats(str(path), sha256_file(path))
    batches = list(iter_flow_tables(path, IngestOptions(chunk_packets=7), None, stats=stats))
    assert [b.num_rows for b in batches] == [4] * 6 + [1]
    assert stats.packets == 50 and stats.flows == 25
    assert sorted(pa.Table.from_batches(batches).column("src_port").to_pylist()) == list(range(10000, 10025))


# --- many captures ---------------------------------------------------------------------------------
def _no_temp_files(directory: Path) -> bool:
    # The output's lock file (.NAME.lock) stays by design (pcapvision.lock); it is not a temporary.
    return not [p for p in directory.iterdir() if (p.name.startswith(".") and p.suffix != ".lock") or p.suffix == ".tmp"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_ingest_single_file_keeps_going_after_a_bad_capture(captures: dict[str, Path], tmp_path: Path,
                                                            caplog, jobs: int) -> None:
    out = tmp_path / "out" / "flows.parquet"
    inputs = [captures["udp"], captures["bad"], captures["tcp"]]
    with caplog.at_level(logging.ERROR):
        summary = ingest(inputs, out, labeler=Labeler.from_label("normal", "dns"), jobs=jobs)
    assert summary.files_ok == 2
    assert [p for p, _ in summary.files_failed] == [str(captures["bad"])]
    assert not summary.files_failed[0][1].startswith(str(captures["bad"]))  # the path is not repeated
    assert f"{captures['bad']}: " in caplog.text
    assert (summary.packets, summary.flows) == (6 + 8, 3 + 1)
    table = pq.read_table(out)
    assert table.schema.equals(FLOWS_SCHEMA, check_metadata=False)
    # Input order is kept: the UDP capture's flows, then the TCP capture's.
    assert table.column("source_file").to_pylist() == [str(captures["udp"])] * 3 + [str(captures["tcp"])]
    assert set(table.column("label").to_pylist()) == {"normal"}
    meta = metadata_from_schema(pq.read_schema(out))
    assert [s["source_file"] for s in meta["sources"]] == [str(captures["udp"]), str(captures["tcp"])]
    assert meta["params"]["labels"] == {"label": "normal", "family": "dns"}
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    assert _no_temp_files(out.parent)
    assert "failed: " in summary.format() and summary.to_dict()["files_failed"][0][0] == str(captures["bad"])


def test_ingest_all_failed_writes_nothing(captures: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    out.write_bytes(b"previous output")
    summary = ingest([captures["bad"]], out)
    assert summary.files_ok == 0 and len(summary.files_failed) == 1
    assert out.read_bytes() == b"previous output"
    assert _no_temp_files(tmp_path)


def test_jobs_give_the_same_table(captures: dict[str, Path], tmp_path: Path) -> None:
    inputs = [captures["udp"], captures["tcp"], udp_capture(tmp_path / "more.pcap", 4, base_port=20000)]
    one = ingest(inputs, tmp_path / "one.parquet", jobs=1)
    two = ingest(inputs, tmp_path / "two.parquet", jobs=2)
    assert one.flows == two.flows == 8
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))


def test_dataset_directory_skips_what_is_there(captures: dict[str, Path], tmp_path: Path, caplog) -> None:
    out = tmp_path / "flows"
    first = ingest([captures["udp"], captures["bad"]], out)
    assert first.files_ok == 1 and len(first.files_failed) == 1
    part = out / f"{sha256_file(captures['udp'])[:16]}.parquet"
    assert sorted(p.name for p in out.iterdir()) == [part.name]
    meta = metadata_from_schema(pq.read_schema(part))
    assert meta["source_sha256"] == sha256_file(captures["udp"]) and meta["params"]["reader"] == "auto"
    before = part.stat().st_mtime_ns

    # The nightly re-run: the known capture is skipped, the new one added.
    second = ingest([captures["udp"], captures["tcp"]], out, jobs=2)
    assert (second.files_ok, second.files_skipped_already_ingested, second.flows) == (1, 1, 1)
    assert part.stat().st_mtime_ns == before
    assert pq.read_table(out).num_rows == 4
    assert _no_temp_files(out)

    # Other parameters: the part is re-ingested (replaced, with a warning naming what changed);
    # a parameter that cannot change rows (chunk_packets) keeps it; --force re-ingests anyway.
    with caplog.at_level(logging.WARNING):
        third = ingest([captures["udp"]], out, IngestOptions(max_bytes=10))
    assert (third.files_ok, third.files_reingested, third.files_skipped_already_ingested) == (1, 1, 0)
    assert "other parameters (max_bytes)" in caplog.text and "1 re-ingested" in third.format()
    assert metadata_from_schema(pq.read_schema(part))["params"]["max_bytes"] == 10
    assert pq.read_table(out).num_rows == 4 and _no_temp_files(out)
    kept = ingest([captures["udp"]], out, IngestOptions(max_bytes=10, chunk_packets=7))
    assert kept.files_skipped_already_ingested == 1
    forced = ingest([captures["udp"]], out, IngestOptions(max_bytes=10), force=True)
    assert forced.files_ok == 1 and forced.files_reingested == 0


def test_dataset_part_is_reingested_when_the_labels_change(captures: dict[str, Path], tmp_path: Path) -> None:
    """New rules (same path, new content) relabel the part; the labeler hash is in the metadata."""
    out, rules = tmp_path / "flows", tmp_path / "rules.csv"
    rules.write_text("label,dst_port\nold,53\n")
    first = Labeler.from_rules_csv(rules)
    ingest([captures["udp"]], out, labeler=first)
    assert set(pq.read_table(out).column("label").to_pylist()) == {"old"}
    assert ingest([captures["udp"]], out, labeler=Labeler.from_rules_csv(rules)).files_skipped_already_ingested == 1
    rules.write_text("label,dst_port\nnew,53\n")
    second = Labeler.from_rules_csv(rules)
    assert second.sha256() != first.sha256()
    summary = ingest([captures["udp"]], out, labeler=second)
    assert (summary.files_ok, summary.files_reingested) == (1, 1)
    table = pq.read_table(out)
    assert set(table.column("label").to_pylist()) == {"new"}
    assert metadata_from_schema(table.schema)["params"]["labeler_sha256"] == second.sha256()
    # The hash follows the rules' content and options, not where the file lies.
    moved = tmp_path / "moved.csv"
    moved.write_bytes(rules.read_bytes())
    assert Labeler.from_rules_csv(moved).sha256() == second.sha256()
    assert Labeler.from_rules_csv(moved, unlabeled="drop").sha256() != second.sha256()
    assert Labeler.from_label("a").sha256() != Labeler.from_label("a", family="f").sha256()


def test_same_content_twice_is_ingested_once(captures: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.pcap"
    copy.write_bytes(captures["udp"].read_bytes())
    summary = ingest([captures["udp"], copy], tmp_path / "flows.parquet")
    assert (summary.files_ok, summary.files_skipped_already_ingested, summary.flows) == (1, 1, 3)


def test_labels_rules_end_to_end(captures: dict[str, Path], tmp_path: Path) -> None:
    rules = tmp_path / "rules.csv"
    rules.write_text("label,family,rule_id,file,dst_port\nweb,https,tls-rule,*tcp.pcap,443\nresolver,,,,53\n")
    labeler = Labeler.from_rules_csv(rules, unlabeled="drop")
    summary = ingest([captures["udp"], captures["tcp"]], tmp_path / "flows.parquet", labeler=labeler)
    table = pq.read_table(tmp_path / "flows.parquet")
    assert summary.flows == table.num_rows == 4
    assert table.select(["label", "family", "label_source"]).to_pylist() == (
        [{"label": "resolver", "family": None, "label_source": "rules.csv:3"}] * 3
        + [{"label": "web", "family": "https", "label_source": "tls-rule"}])


def test_drop_counts_only_kept_flows(captures: dict[str, Path], tmp_path: Path) -> None:
    rules = tmp_path / "rules.csv"
    rules.write_text("label,dst_port\nweb,443\n")
    labeler = Labeler.from_rules_csv(rules, unlabeled="drop")
    summary = ingest([captures["udp"], captures["tcp"]], tmp_path / "flows.parquet", labeler=labeler)
    assert summary.flows == pq.read_table(tmp_path / "flows.parquet").num_rows == 1


def test_output_kind_errors(captures: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="neither a directory nor a"):
        ingest([captures["udp"]], tmp_path / "file")
    with pytest.raises(ParameterError, match="'jobs' parameter"):
        ingest([captures["udp"]], tmp_path / "o.parquet", jobs=0)


def test_capture_failing_half_way_leaves_no_rows_behind(captures: dict[str, Path], tmp_path: Path,
                                                        monkeypatch) -> None:
    """A capture that breaks after some flows were written (single file, written directly) is rolled back."""
    many = udp_capture(tmp_path / "many.pcap", 9, base_port=30000)
    real = pipeline.iter_flow_tables

    def breaks_after_two_batches(path, *args, **kwargs):
        for i, batch in enumerate(real(path, *args, **kwargs)):
            if i == 2 and Path(path) == many:
                raise RuntimeError("boom")
            yield batch

    monkeypatch.setattr(flowstream, "OUTPUT_BATCH_FLOWS", 2)
    monkeypatch.setattr(pipeline, "iter_flow_tables", breaks_after_two_batches)
    out = tmp_path / "flows.parquet"
    summary = ingest([captures["udp"], many, captures["tcp"]], out)
    assert summary.files_failed == [(str(many), "internal error (RuntimeError: boom)")]
    assert summary.internal_errors == 1 and "1 internal error(s)" in summary.format()
    table = pq.read_table(out)
    assert table.column("source_file").to_pylist() == [str(captures["udp"])] * 3 + [str(captures["tcp"])]
    assert metadata_from_schema(table.schema)["sources"][1]["source_file"] == str(captures["tcp"])
    assert _no_temp_files(tmp_path)


def test_dataset_part_records_its_capture(captures: dict[str, Path], tmp_path: Path) -> None:
    ingest([captures["tcp"]], tmp_path / "ds", IngestOptions(idle_timeout_s=60))
    part = next((tmp_path / "ds").iterdir())
    meta = metadata_from_schema(pq.read_schema(part))
    assert meta["source_file"] == str(captures["tcp"])
    assert meta["params"]["idle_timeout_s"] == 60.0
    assert meta["sources"] == [{"source_file": str(captures["tcp"]), "source_sha256": sha256_file(captures["tcp"]),
                                "bytes_read": captures["tcp"].stat().st_size, "packets": 8, "packets_read": 8, "flows": 1,
                                "packets_skipped": {}, "frames_decoded_by": {"fast": 8},
                                "tcp_flows_with_holes": 0, "tcp_missed_bytes": 0}]
    assert pq.read_schema(part).equals(FLOWS_SCHEMA, check_metadata=False)
