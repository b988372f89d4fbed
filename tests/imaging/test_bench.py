"""bench/imaging.py still runs (tiny sizes) and its synthetic flows render like any flows table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from pcapvision.imaging import get_representation

BENCH = Path(__file__).resolve().parents[2] / "bench" / "imaging.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_imaging", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_and_reports_every_representation(capsys):
    bench = load_bench()
    assert bench.main(["--n", "3000", "--n-io", "500", "--repeat", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    names = [r["what"] for r in record["results"]]
    assert names[:4] == ["render payload", "render byte-distribution", "render flowpic", "render packets"]
    assert all(r["flows_per_s"] > 0 for r in record["results"])
    assert [s["storage"] for s in record["storage"]] == ["fixed_size_binary(784)", "fixed_shape_tensor(uint8,[28,28])"]


def test_synthetic_payloads_render_to_their_prefix():
    flows = load_bench().synthetic_flows(500, seed=3)
    images, valid, _ = get_representation("payload").render(flows)
    payloads = flows.column("payload").to_pylist()
    assert valid.tolist() == [len(p) > 0 for p in payloads] and not valid.all() and valid.any()
    for image, payload in zip(images, payloads):
        assert image.tobytes() == payload[:784].ljust(784, b"\0")
    assert np.array_equal(flows.column("packet_ip_bytes").combine_chunks().values.to_numpy(),
                          flows.column("packet_payload_bytes").combine_chunks().values.to_numpy() + 40)
