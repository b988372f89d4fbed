"""Bad input gives a one-line error naming the file and the cause, with the right exit code:
non-finite numbers are usage errors (exit 2), broken tables and metadata are input errors (exit 1)."""

from __future__ import annotations

import pytest

from pcapvision.cli import main
from pcapvision.synth import FAMILIES


def _usage_error(argv, capsys, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and "internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("--idle-timeout", "inf", "The 'idle_timeout_s' parameter must be a finite positive number. Got inf instead."),
    ("--idle-timeout", "nan", "The 'idle_timeout_s' parameter must be a positive number. Got nan instead."),
    ("--active-timeout", "1e300", "The 'active_timeout_s' parameter must be a positive number <= 1e+09. Got 1e+300"),
])
def test_non_finite_or_overflowing_ingest_numbers_are_usage_errors(tmp_path, capsys, option, value, fragment):
    _usage_error(["ingest", str(tmp_path / "a.pcap"), "-o", str(tmp_path / "f.parquet"), option, value], capsys, fragment)


def test_non_finite_representation_parameter_is_a_usage_error(tmp_path, capsys):
    _usage_error(["image", str(tmp_path / "flows.parquet"), "-o", str(tmp_path / "i.parquet"), "--repr", "flowpic",
                  "--param", "time_window_ms=inf"], capsys, "The 'time_window_ms' parameter must be a finite positive number")


@pytest.mark.parametrize("weight", ["inf", "1e308"])
def test_non_finite_mix_weights_are_usage_errors(tmp_path, capsys, weight):
    a, b = list(FAMILIES)[:2]
    mix = f"{a}={weight},{b}={weight}"
    fragment = "must be a finite real number" if weight == "inf" else "weights whose sum is finite"
    _usage_error(["synth", "-o", str(tmp_path / "s"), "--flows", "10", "--mix", mix], capsys, fragment)


@pytest.fixture(scope="module")
def broken_tables(tmp_path_factory):
    """A good images table and broken variants of it: text, empty, truncated, corrupt metadata,
    a label column of the wrong type."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.classify.conftest import toy_images, write_images_table

    d = tmp_path_factory.mktemp("broken")
    x, y = toy_images(40)
    good = write_images_table(d / "good.parquet", np.rint(x[..., 0] * 255).astype(np.uint8), np.array(["a", "b"])[y],
                              np.array(["fa", "fb"])[y], [f"g{i % 8}" for i in range(40)])
    (d / "text.parquet").write_text("flow_id,label\n1,a\n")
    (d / "empty.parquet").write_bytes(b"")
    data = good.read_bytes()
    (d / "truncated.parquet").write_bytes(data[: len(data) // 2])
    table = pq.read_table(good)
    pq.write_table(table.replace_schema_metadata({b"pcapvision": b"{not json"}), d / "badmeta.parquet")
    label = table.schema.get_field_index("label")
    pq.write_table(table.set_column(label, "label", pa.array(np.arange(40))), d / "intlabel.parquet")
    return d


@pytest.mark.parametrize(("name", "fragment"), [
    ("text", "not a readable Parquet file"), ("empty", "not a readable Parquet file"),
    ("truncated", "not a readable Parquet file"), ("badmeta", "corrupt pcapvision metadata"),
    ("intlabel", "column 'label' is int64, expected string"),
])
def test_broken_tables_are_one_line_input_errors(broken_tables, capsys, name, fragment):
    path = broken_tables / f"{name}.parquet"
    code = main(["train", str(path), "-o", str(broken_tables / f"model-{name}"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{path}: " in err and fragment in err and "internal error" not in err
    assert not (broken_tables / f"model-{name}").exists()


def test_corrupt_metadata_in_a_flows_table_is_named(broken_tables):
    from pcapvision.errors import DataContractError
    from pcapvision.io import read_parquet_metadata

    with pytest.raises(DataContractError, match=r"badmeta.parquet: corrupt pcapvision metadata"):
        read_parquet_metadata(broken_tables / "badmeta.parquet")


@pytest.mark.parametrize("raised", [
    OSError(28, "No space left on device"),
    OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),  # as pyarrow says it
])
def test_disk_full_names_the_output_and_leaves_no_temporary(tmp_path, raised):
    from pcapvision.errors import OutputWriteError
    from pcapvision.io import atomic_path

    target = tmp_path / "out.parquet"
    with pytest.raises(OutputWriteError) as info, atomic_path(target):
        raise raised
    assert str(info.value) == f"writing {target}: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_a_full_disk_naming_the_output(tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    from tests.ingest.crafted import PacketSpec, Record, ethernet, write_pcap

    pcap = write_pcap(tmp_path / "a.pcap", [Record(1_700_000_000_000_000_000, ethernet(
        PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443, payload=b"x" * 64).ip_packet()))])
    assert main(["ingest", str(pcap), "-o", str(tmp_path / "flows.parquet"), "--quiet"]) == 0

    def full(*args, **kwargs):
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    capsys.readouterr()
    images = tmp_path / "images.parquet"
    assert main(["image", str(tmp_path / "flows.parquet"), "-o", str(images), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"pcapvision image: error: writing {images}: no space left on device"


_PROBE = "import sys; from pcapvision.cli import main; code = main(sys.argv[1:]); print('tensorflow' in sys.modules); sys.exit(code)"


@pytest.mark.parametrize("argv", [
    ["evaluate", "{d}/no-model", "mnist"],
    ["evaluate", "{d}/no-model", "{d}/no-images.parquet"],
    ["predict", "{d}/no-model", "{d}/no.pcap", "-o", "{d}/v.csv"],
    ["robustness", "{d}/no-model", "{d}/no-images.parquet", "-o", "{d}/r"],
    ["train", "{d}/no-images.parquet", "-o", "{d}/m"],
], ids=["evaluate-model", "evaluate-data", "predict", "robustness", "train"])
def test_a_wrong_path_fails_before_tensorflow_starts(tmp_path, argv):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    args = [a.format(d=tmp_path) for a in argv] + ["--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    # TensorFlow's start-up (10-40 s on a loaded 2-core VM) never happens for a wrong path.
    assert done.returncode == 1 and done.stdout.strip() == "False", (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and str(tmp_path) in done.stderr


def test_native_stderr_is_silenced_only_while_tensorflow_starts(capfd):
    import os

    from pcapvision.console import _native_stderr_silenced

    os.write(2, b"before\n")
    with _native_stderr_silenced():
        os.write(2, b"I0000 00:00:1795964169.073334 6924 cudart_stub.cc:31] Could not find cuda drivers\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "before\nafter\n"


def test_a_full_disk_during_ingest_is_the_output_s_failure_not_the_capture_s(tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    from tests.ingest.crafted import PacketSpec, Record, ethernet, write_pcap

    pcap = write_pcap(tmp_path / "a.pcap", [Record(1_700_000_000_000_000_000, ethernet(
        PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443, payload=b"x" * 64).ip_packet()))])

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full)
    out = tmp_path / "out" / "flows.parquet"
    assert main(["ingest", str(pcap), "-o", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"pcapvision ingest: error: writing {out}: no space left on device"
    assert sorted(p.name for p in out.parent.iterdir()) == [".flows.parquet.lock"]


def test_an_mnist_model_given_an_images_table_is_told_so(broken_tables, tmp_path):
    from pcapvision.classify import build_mlp, evaluate, save_model
    from pcapvision.errors import ModelFormatError
    from pcapvision.io import make_metadata

    model_dir = tmp_path / "mnist-model"
    save_model(build_mlp((28, 28, 1), 10), model_dir, make_metadata(
        "classify", {}, class_names=[str(d) for d in range(10)], target="digit",
        dataset={"name": "mnist", "source": "bundled", "seed": 0, "data_sha256": "0" * 64}))
    with pytest.raises(ModelFormatError, match=r"mnist-model: an MNIST model cannot be evaluated on the images table .*good"):
        evaluate(model_dir, broken_tables / "good.parquet")


def test_a_missing_capture_among_others_is_reported_and_the_rest_ingested(tmp_path, capsys):
    import pyarrow.parquet as pq

    from tests.ingest.crafted import PacketSpec, Record, ethernet, write_pcap

    pcap = write_pcap(tmp_path / "a.pcap", [Record(1_700_000_000_000_000_000, ethernet(
        PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443, payload=b"x" * 64).ip_packet()))])
    gone, out = tmp_path / "gone.pcap", tmp_path / "flows.parquet"
    assert main(["ingest", str(pcap), str(gone), "-o", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"failed: {gone}: no such file or directory" in captured.out
    assert captured.err.strip() == f"{gone}: no such file or directory" and "Traceback" not in captured.err
    assert pq.read_table(out).num_rows == 1
