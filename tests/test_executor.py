"""The Dask executor gives the same flows and images tables as the local one, even when a worker dies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pcapvision.executor import image_captures, ingest_captures
from pcapvision.ingest import Labeler

pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'pcapvision[dask]')")

SAMPLE = Path(__file__).resolve().parent.parent / "sample_pcaps"
CAPTURES = ["normal-host00.pcap", "normal-host01.pcap", "normal-host02.pcap", "infected-host00.pcap",
            "infected-host01.pcap", "infected-host02.pcap"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def captures() -> list[str]:
    return [os.fspath(SAMPLE / name) for name in CAPTURES]


@pytest.fixture(scope="module")
def labeler() -> Labeler:
    return Labeler.from_rules_csv(SAMPLE / "labels.csv")


@pytest.fixture(scope="module")
def local(tmp_path_factory, captures, labeler) -> Path:
    out = tmp_path_factory.mktemp("local")
    ingest_captures(captures, out / "flows", labeler=labeler, quiet=True)
    image_captures(out / "flows", out / "images.parquet", quiet=True)
    return out


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def _parts(flows: Path) -> dict[str, object]:
    return {p.name: pq.read_table(p).replace_schema_metadata(None) for p in sorted(flows.glob("*.parquet"))}


def _assert_same_flows(flows: Path, expected: Path) -> None:
    got, want = _parts(flows), _parts(expected)
    assert sorted(got) == sorted(want) and len(got) == len(CAPTURES)
    for name, table in want.items():
        assert got[name].equals(table), name
    ids = [i for t in got.values() for i in t.column("flow_id").to_pylist()]
    assert len(ids) == len(set(ids))  # no row written twice
    assert not [p for p in flows.iterdir() if p.name.startswith(".")]  # nothing torn left visible


def test_two_worker_cluster_gives_the_local_tables(tmp_path, captures, labeler, local, cluster):
    address = cluster.scheduler_address
    summary = ingest_captures(captures, tmp_path / "flows", labeler=labeler, executor="dask", scheduler=address)
    assert summary.files_ok == len(CAPTURES) and not summary.files_failed
    assert summary.flows == sum(t.num_rows for t in _parts(local / "flows").values())
    _assert_same_flows(tmp_path / "flows", local / "flows")

    images = image_captures(tmp_path / "flows", tmp_path / "images.parquet", executor="dask", scheduler=address,
                            quiet=True)
    want = pq.read_table(local / "images.parquet")
    got = pq.read_table(tmp_path / "images.parquet")
    assert got.replace_schema_metadata(None).equals(want.replace_schema_metadata(None))
    local_summary = json.loads((local / "images.parquet.summary.json").read_text())
    assert json.loads(json.dumps(images.to_dict())) == local_summary and images.rows_out == want.num_rows


def test_a_worker_killed_mid_task_loses_and_duplicates_nothing(tmp_path, captures, labeler, local, cluster):
    from distributed import Client
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillTwice(WorkerPlugin):
        """A worker dies on the spot (its nanny restarts it) as the first ingest task starts,
        and another as a task finishes, after its part is written but before the scheduler has
        the result. Defined here so that it is pickled by value for the worker processes."""

        def __init__(self, marker: str) -> None:
            self.marker = marker

        def transition(self, key, start, finish, **kwargs) -> None:  # noqa: ANN001
            if "ingest_one" in str(key) and finish in ("executing", "memory"):
                try:
                    fd = os.open(f"{self.marker}-{finish}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.close(fd)
                os._exit(1)

    marker = tmp_path / "killed"
    with Client(cluster.scheduler_address) as client:
        client.register_plugin(KillTwice(os.fspath(marker)), name="kill-first-task")
        try:
            summary = ingest_captures(captures, tmp_path / "flows", labeler=labeler, executor="dask",
                                      scheduler=cluster.scheduler_address)
        finally:
            client.unregister_worker_plugin("kill-first-task")
    assert Path(f"{marker}-executing").exists() and Path(f"{marker}-memory").exists()  # both kills happened
    assert summary.files_ok + summary.files_skipped_already_ingested == len(CAPTURES) and not summary.files_failed
    _assert_same_flows(tmp_path / "flows", local / "flows")


def test_cli_ingest_and_image_take_the_dask_executor(tmp_path, captures, local, cluster, capsys):
    from pcapvision.cli import main

    address = cluster.scheduler_address
    flows, images = tmp_path / "flows", tmp_path / "images.parquet"
    assert main(["ingest", *captures, "-o", str(flows), "--labels", str(SAMPLE / "labels.csv"), "--executor", "dask",
                 "--scheduler", address, "--quiet"]) == 0
    assert main(["image", str(flows), "-o", str(images), "--executor", "dask", "--scheduler", address, "--quiet"]) == 0
    _assert_same_flows(flows, local / "flows")
    assert pq.read_table(images).replace_schema_metadata(None).equals(
        pq.read_table(local / "images.parquet").replace_schema_metadata(None))


def test_scheduler_without_the_dask_executor_is_a_usage_error(tmp_path, captures):
    from pcapvision.errors import ParameterError

    with pytest.raises(ParameterError, match="--scheduler needs --executor dask"):
        ingest_captures(captures[:1], tmp_path / "flows", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ParameterError, match="must be a dataset directory"):
        ingest_captures(captures[:1], tmp_path / "flows.parquet", executor="dask", scheduler="tcp://127.0.0.1:1")
