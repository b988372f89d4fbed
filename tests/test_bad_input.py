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
