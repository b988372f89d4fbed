"""The suite on a traffic model: network-level distortions and the realizable round trip end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pcapvision.robustness.suite import JSON_FILE, SuiteConfig, run_suite
from tests.contract_keys import check_documented_keys
from tests.robustness.pcaps import write_tls_capture


@pytest.fixture(scope="module")
def traffic_model(tmp_path_factory):
    """Crafted captures (6 normal, 6 malicious hosts) -> flows -> payload images -> a trained model."""
    from pcapvision.classify.pipeline import train_images
    from pcapvision.imaging import image_flows
    from pcapvision.ingest import Labeler, read_flows
    from pcapvision.io import metadata_from_schema, write_parquet_atomic

    root = tmp_path_factory.mktemp("traffic")
    tables = []
    for host in range(12):
        malicious = host % 2 == 1
        path = root / f"host{host}.pcap"
        write_tls_capture(path, [41000 + 10 * host + k for k in range(4)], marker=0xAA if malicious else None)
        tables.append(read_flows(path, labeler=Labeler.from_label("malicious" if malicious else "normal")))
    flows = pa.concat_tables(tables)
    flows_path = write_parquet_atomic(flows, root / "flows.parquet", metadata_from_schema(tables[0].schema))
    images_path = root / "images.parquet"
    image_flows(flows_path, images_path, "payload", {"column": "payload"}, quiet=True)
    model_dir = root / "model"
    train_images(images_path, model_dir, epochs=8, seed=0, patience=8)
    return model_dir, images_path, flows_path


TINY = SuiteConfig(n_eval=50, n_attack=20, fgsm_eps=(0.1,), pgd_linf_eps=(0.1,), pgd_steps=3, pgd_l2_eps=(1.0,),
                   n_deepfool=4, deepfool_steps=5, fooling_per_class=1, fooling_steps=20, n_certify=4, certify_n=50,
                   n_realizable=4, realizable_steps=5)


def test_traffic_suite_with_flows(traffic_model, tmp_path):
    model_dir, images_path, flows_path = traffic_model
    record = run_suite(model_dir, images_path, tmp_path / "r", config=TINY, flows=flows_path)
    on_disk = json.loads((tmp_path / "r" / JSON_FILE).read_text())
    assert on_disk["data"]["split"].startswith("the model's stored test split")
    rows = on_disk["traffic_distortions"]["rows"]
    assert rows[0]["severity"] == 0 and len(rows) == 1 + 8 * 5
    by_name = {(r["distortion"], r["severity"]): r["accuracy"] for r in rows}
    # Packet-level events edit only the per-packet columns (see traffic_distortions): payload images
    # cannot move under them by construction. This checks that wiring, not what reassembly does.
    for name in ("packet_drop", "packet_duplication", "packet_reordering", "timing_jitter"):
        assert by_name[(name, 5)] == rows[0]["accuracy"]
    assert all("malicious_to_normal_evasion_rate" in r for r in on_disk["attacks"])
    for strategy in ("append", "client_hello"):
        real = on_disk["realizable"][strategy]
        assert real["n_round_tripped"] >= 1, real
        assert real["realizability_rate"] == 1.0
        assert all(f.get("realized", True) for f in real["flows"])
        assert record["realizable"][strategy]["n_flows"] == real["n_flows"]
    assert all(f["handshake_consistent"] for f in on_disk["realizable"]["client_hello"]["flows"] if "realized" in f)
    # every key written is documented in docs/contracts.md, and every documented key is written
    assert check_documented_keys(on_disk, "robustness.json") >= 8


def test_traffic_suite_without_flows_says_why(traffic_model, tmp_path):
    model_dir, images_path, _ = traffic_model
    record = run_suite(model_dir, images_path, tmp_path / "r", config=TINY)
    assert "--flows" in record["traffic_distortions"]["skipped"]
    assert "--flows" in record["realizable"]["skipped"]
    assert np.isfinite(record["clean"]["accuracy"])


def test_suite_runs_on_a_byte_embedding_model(traffic_model, tmp_path):
    """cnn-embed: gradient attacks run through the interpolated embedding; the realizable attack stays realizable."""
    from pcapvision.classify.pipeline import train_images

    _, images_path, flows_path = traffic_model
    model_dir = tmp_path / "embed"
    train_images(images_path, model_dir, arch="cnn-embed", epochs=4, seed=0, patience=4)
    record = run_suite(model_dir, images_path, tmp_path / "r", config=TINY, flows=flows_path)
    assert record["model"]["arch"] == "cnn-embed" and "cnn-embed treats each byte as a category" in record["attack_note"]
    fgsm = next(r for r in record["attacks"] if r["attack"] == "fgsm")
    assert fgsm["norm_linf"]["max"] > 0.05  # gradients reach the pixels: the attack moved them
    for strategy in ("append", "client_hello"):
        assert record["realizable"][strategy]["realizability_rate"] == 1.0
