"""Arrow arrays built from buffers equal pyarrow's own conversions; ingest leaves pandas unloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapvision.ingest.arrays import numeric_array, repeated_string_array, string_array, to_numpy

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


@settings(deadline=None)  # the first pa.array call imports pandas
@given(st.lists(st.one_of(st.none(), st.text())))
def test_string_array_equals_pyarrows_conversion(values):
    built = string_array(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.string()))


@pytest.mark.parametrize("value, n", [("", 0), ("", 3), ("capture.pcap", 1), ("é-ü.pcapng", 5)])
def test_repeated_string_array(value, n):
    built = repeated_string_array(value, n)
    built.validate(full=True)
    assert built.equals(pa.array([value] * n, pa.string()))


@pytest.mark.parametrize("arrow_type", [pa.uint8(), pa.uint16(), pa.int32(), pa.int64(), pa.float64()])
def test_numeric_array_casts_and_equals_pyarrows_conversion(arrow_type):
    values = np.array([0, 1, 7, 255], np.int64)
    built = numeric_array(values, arrow_type)
    built.validate(full=True)
    assert built.equals(pa.array(values, arrow_type))


def test_to_numpy_reads_slices_chunks_and_strings():
    ints = pa.array(np.arange(10, dtype=np.int64))
    assert to_numpy(ints.slice(3, 4)).tolist() == [3, 4, 5, 6]
    chunked = pa.chunked_array([pa.array([1, 2], pa.uint16()), pa.array([3], pa.uint16())])
    assert to_numpy(chunked).tolist() == [1, 2, 3] and to_numpy(chunked).dtype == np.uint16
    text = to_numpy(pa.array(["a", None, "b"]).slice(1))
    assert text.dtype == object and text.tolist() == [None, "b"]
    assert to_numpy(pa.array([1, None], pa.int64())).tolist() == [1, None]


def test_ingest_does_not_load_pandas(tmp_path):
    probe = ("import sys\nfrom pcapvision.cli import main\n"
             "code = main(sys.argv[1:])\nprint(code, 'pandas' in sys.modules)")
    argv = ["ingest", str(SAMPLES), "--labels", str(SAMPLES / "labels.csv"), "-o", str(tmp_path / "f.parquet"),
            "--quiet"]
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "0 False", out
