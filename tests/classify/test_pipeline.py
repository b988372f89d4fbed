"""Traffic and MNIST runs end to end: train, evaluate, predict, report, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pcapvision.classify import load_model
from pcapvision.classify.pipeline import evaluate, train_images
from pcapvision.classify.predict import predict_pcaps
from pcapvision.cli import main
from pcapvision.errors import ModelFormatError, ParameterError
from tests.classify.conftest import toy_images, write_images_table


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory, images_table):
    out = tmp_path_factory.mktemp("traffic") / "binary"
    record = train_images(images_table, out, target="label", epochs=3, batch_size=32, seed=0)
    return out, record


def test_traffic_model_dir_holds_model_metadata_manifest_and_report(binary_model, images_table):
    out, record = binary_model
    model, metadata = load_model(out)
    assert metadata["class_names"] == ["malicious", "normal"] and metadata["positive_class"] == "malicious"
    from tests.contract_keys import check_documented_keys

    assert check_documented_keys(metadata, "metadata.json") == 2
    assert metadata["representation"] == "payload" and metadata["representation_params"]
    assert metadata["params"]["seed"] == 0 and metadata["params"]["arch"] == "cnn"
    assert metadata["split"]["manifest_sha256"] and metadata["data_sha256"] == record["data"]["data_sha256"]
    manifest = pd.read_parquet(out / "split_manifest.parquet")
    sides = {s: set(manifest.loc[manifest["split"] == s, "split_group"]) for s in ("train", "validation", "test")}
    assert not (sides["train"] & sides["test"]) and not (sides["train"] & sides["validation"])
    assert len(manifest) == 240 and manifest["flow_id"].is_unique
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"accuracy", "macro", "per_class", "confusion_matrix", "positive"} <= set(metrics["test"])
    assert metrics["test"]["accuracy"] > 0.8  # the toy classes are separable
    names = {row["baseline"] for row in metrics["baselines"]}
    assert names == {"majority class", "byte histogram + logistic regression", "single-pixel stump", "payload length only"}
    html = (out / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "<script" not in html
    for section in ("Training curves", "Confusion matrix", "ROC and precision-recall", "Sample inputs per class",
                    "Worst misclassified", "Trivial baselines"):
        assert section in html
    # the payload length gives the toy classes away: the report must say so plainly
    assert any("payload length only" in w for w in record["baseline_warnings"])
    assert "payload length only" in html and "shows little beyond" in html


def test_evaluate_on_the_training_table_uses_the_stored_test_split(binary_model, images_table, tmp_path):
    out, record = binary_model
    result = evaluate(out, images_table, out_dir=tmp_path / "ev")
    assert result["test"]["n_samples"] == record["test"]["n_samples"]
    assert result["test"]["accuracy"] == pytest.approx(record["test"]["accuracy"])
    assert result["baselines"] and (tmp_path / "ev" / "report.html").is_file()


def test_images_made_with_other_parameters_are_refused(binary_model, tmp_path):
    out, _ = binary_model
    x, y = toy_images(30)
    other = write_images_table(tmp_path / "other.parquet", (x[..., 0] * 255).astype(np.uint8),
                               np.where(y == 0, "normal", "malicious"), ["f"] * 30, [f"g{i % 5}" for i in range(30)],
                               representation_params={"column": "src2dst_payload"})
    with pytest.raises(ModelFormatError, match="images made with representation 'payload'.*but the model expects"):
        evaluate(out, other)


def test_family_target_trains_a_multiclass_model(images_table, tmp_path):
    record = train_images(images_table, tmp_path / "fam", target="family", epochs=2, batch_size=32)
    assert record["test"]["class_names"] == ["c2-beacon", "exfil", "web-browsing"]
    assert "positive" not in record["test"] and len(record["test"]["confusion_matrix"]) == 3
    assert all("most_confused_with" in v for v in record["test"]["per_class"].values())


def _craft_pcap(path):
    from scapy.all import IP, TCP, Ether, wrpcap

    packets = []
    t = 1_700_000_000.0
    for i in range(4):
        client, port = f"10.0.0.{i + 2}", 40000 + i
        body = (b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n" if i % 2 else bytes(range(200)))
        syn = Ether() / IP(src=client, dst="10.0.1.1") / TCP(sport=port, dport=80, flags="S", seq=100)
        synack = Ether() / IP(src="10.0.1.1", dst=client) / TCP(sport=80, dport=port, flags="SA", seq=500, ack=101)
        data = Ether() / IP(src=client, dst="10.0.1.1") / TCP(sport=port, dport=80, flags="PA", seq=101, ack=501) / body
        fin = Ether() / IP(src=client, dst="10.0.1.1") / TCP(sport=port, dport=80, flags="FA", seq=101 + len(body), ack=501)
        for j, p in enumerate((syn, synack, data, fin)):
            p.time = t + i + j * 0.01
            packets.append(p)
    wrpcap(str(path), packets)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predict_gives_one_verdict_per_flow(binary_model, tmp_path, suffix):
    out, _ = binary_model
    pcap = _craft_pcap(tmp_path / "crafted.pcap")
    target = tmp_path / f"verdicts{suffix}"
    verdicts = predict_pcaps(out, [pcap], target)
    assert len(verdicts) == 4 and verdicts["flow_id"].is_unique and verdicts["imaged"].all()
    assert set(verdicts["predicted"]) <= {"malicious", "normal"}
    np.testing.assert_allclose(verdicts["p_malicious"] + verdicts["p_normal"], 1.0, rtol=1e-5)
    assert (verdicts["predicted"] == np.where(verdicts["p_malicious"] >= 0.5, "malicious", "normal")).all()
    back = pd.read_parquet(target) if suffix == ".parquet" else pd.read_csv(target)
    assert back["flow_id"].tolist() == verdicts["flow_id"].tolist()
    assert set(back["src_ip"]) == {"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}


def test_predict_refuses_an_mnist_model(mnist_model_dir, tmp_path):
    pcap = _craft_pcap(tmp_path / "c.pcap")
    with pytest.raises(ModelFormatError, match="trained on MNIST"):
        predict_pcaps(mnist_model_dir[0], [pcap], tmp_path / "v.parquet")


def test_cli_train_evaluate_predict(mnist_small, binary_model, tmp_path, capsys):
    model_dir = tmp_path / "cli-mnist"
    assert main(["train", "--dataset", "mnist", "--mnist-file", str(mnist_small), "-o", str(model_dir),
                 "--epochs", "1", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (model_dir / "report" / "report.html").is_file()
    assert main(["evaluate", str(model_dir), "mnist", "--quiet"]) == 0
    assert "accuracy" in capsys.readouterr().out
    pcap = _craft_pcap(tmp_path / "c.pcap")
    assert main(["predict", str(binary_model[0]), str(pcap), "-o", str(tmp_path / "v.csv"), "--quiet"]) == 0
    assert "4 flows" in capsys.readouterr().out
    # a bad model directory is a one-line error with exit code 1
    assert main(["evaluate", str(tmp_path / "nope"), "mnist", "--quiet"]) == 1
    assert "no such model directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "-o", str(tmp_path / "x"), "--epochs", "0", "--dataset", "mnist", "--quiet"])
    assert info.value.code == 2


def test_mnist_model_metadata_rebuilds_its_test_split(mnist_model_dir):
    from pcapvision.classify import read_metadata
    from tests.contract_keys import check_documented_keys

    assert check_documented_keys(read_metadata(mnist_model_dir[0]), "metadata.json") == 2
    from pcapvision.classify import mnist_test_split

    out, record = mnist_model_dir
    model, metadata = load_model(out)
    x_test, y_test = mnist_test_split(metadata)
    assert len(y_test) == record["test"]["n_samples"] == 120
    accuracy = (model.predict(x_test, verbose=0).argmax(1) == y_test).mean()
    assert accuracy == pytest.approx(record["test"]["accuracy"])


def test_evaluate_on_another_table_uses_every_row_and_baselines_from_the_training_table(binary_model, tmp_path):
    out, _ = binary_model
    x, y = toy_images(40, seed=9, n_classes=3)
    fresh = write_images_table(tmp_path / "fresh.parquet", np.rint(x[..., 0] * 255).astype(np.uint8),
                               np.where(y == 0, "normal", "malicious"), ["f"] * 40, [f"new{i % 4}" for i in range(40)],
                               flow_ids=[f"fresh{i:011x}" for i in range(40)])
    result = evaluate(out, fresh, out_dir=tmp_path / "ev")
    assert result["test"]["n_samples"] == 40 and result["split"]["rule"].startswith("every row not in")
    assert result["split"]["n_excluded_seen_in_training"] == {"train": 0, "validation": 0}
    assert {r["baseline"] for r in result["baselines"]} >= {"majority class", "single-pixel stump"}


def test_training_rows_in_another_table_are_never_scored(binary_model, images_table, tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pcapvision.classify import load_images_dataset, read_metadata, resolve_test_rows

    out, record = binary_model
    table = pq.read_table(images_table)
    new_row = table.slice(0, 1).to_pylist()[0]
    new_row.update(flow_id="brand-new-flow", split_group="capnew",
                   image=bytes(255 - b for b in new_row["image"]))
    new_row["image_sha256"] = __import__("hashlib").sha256(new_row["image"]).hexdigest()
    grown = pa.concat_tables([table, pa.Table.from_pylist([new_row], schema=table.schema)])
    path = tmp_path / "grown.parquet"
    pq.write_table(grown.replace_schema_metadata(table.schema.metadata), path)
    manifest = pd.read_parquet(out / "split_manifest.parquet")
    counts = manifest["split"].value_counts()
    result = evaluate(out, path, out_dir=tmp_path / "ev")
    # the old code scored all 241 rows, 160+ of them from the training split
    assert result["test"]["n_samples"] == counts["test"] + 1
    assert result["split"]["n_excluded_seen_in_training"] == {"train": counts["train"], "validation": counts["validation"]}
    assert any("in the model's training split" in n for n in result["notes"])
    rows = resolve_test_rows(out, read_metadata(out), load_images_dataset(path))
    assert len(rows.test) == counts["test"] + 1 and rows.n_excluded_total == counts["train"] + counts["validation"]
    # the same image under a new flow_id is caught by its image_sha256
    renamed = grown.set_column(0, "flow_id", pa.array([f"renamed{i}" for i in range(grown.num_rows)]))
    pq.write_table(renamed.replace_schema_metadata(table.schema.metadata), tmp_path / "renamed.parquet")
    rows = resolve_test_rows(out, read_metadata(out), load_images_dataset(tmp_path / "renamed.parquet"))
    assert len(rows.test) == counts["test"] + 1 and not rows.same_table
    assert rows.n_excluded == {"train": counts["train"], "validation": counts["validation"]}


def test_evaluate_from_another_directory_finds_the_training_table(images_table, tmp_path, monkeypatch):
    import shutil

    from pcapvision.classify import read_metadata

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(images_table, work / "images.parquet")
    monkeypatch.chdir(work)
    train_images("images.parquet", "model", epochs=1, batch_size=64, seed=0)  # a relative path, as users type it
    meta = read_metadata(work / "model")
    assert Path(meta["dataset"]["path"]) == work / "images.parquet"
    x, y = toy_images(40, seed=9, n_classes=3)
    fresh = write_images_table(tmp_path / "fresh.parquet", np.rint(x[..., 0] * 255).astype(np.uint8),
                               np.where(y == 0, "normal", "malicious"), ["f"] * 40, [f"new{i % 4}" for i in range(40)],
                               flow_ids=[f"fresh{i:011x}" for i in range(40)])
    monkeypatch.chdir(tmp_path)  # the old relative record no longer resolved from here: baselines were skipped
    result = evaluate(work / "model", fresh, out_dir=tmp_path / "ev")
    assert result["baselines"] and not any(n.startswith("Baselines skipped") for n in result["notes"])


def test_predict_on_a_bundled_sample_capture(binary_model, tmp_path):
    from tests.conftest import REPO_ROOT

    pcap = REPO_ROOT / "sample_pcaps" / "normal-host01.pcap"
    if not pcap.is_file():
        pytest.skip(f"{pcap} is absent (generated by `pcapvision synth`)")
    from pcapvision.ingest import read_flows

    verdicts = predict_pcaps(binary_model[0], [pcap], tmp_path / "v.parquet")
    flows = read_flows(pcap)
    assert sorted(verdicts["flow_id"]) == sorted(flows.column("flow_id").to_pylist())
    imaged = verdicts[verdicts["imaged"]]
    assert len(imaged) > 0 and imaged["predicted"].isin(["malicious", "normal"]).all()
    assert verdicts.loc[~verdicts["imaged"], "predicted"].isna().all()  # no payload: no verdict, not a guess


def test_predict_takes_ingest_options_over_the_models(binary_model, tmp_path, monkeypatch):
    """predict reads captures with the model's recorded ingest options unless told otherwise."""
    from tests.conftest import REPO_ROOT

    import pcapvision.ingest

    pcap = REPO_ROOT / "sample_pcaps" / "normal-host01.pcap"
    if not pcap.is_file():
        pytest.skip(f"{pcap} is absent (generated by `pcapvision synth`)")
    seen = []
    real = pcapvision.ingest.read_flows

    def spy(path, options=None, **kwargs):
        seen.append(options)
        return real(path, options, **kwargs)

    monkeypatch.setattr(pcapvision.ingest, "read_flows", spy)
    predict_pcaps(binary_model[0], [pcap], ingest_options={"idle_timeout_s": 5.0, "on_hole": "skip"})
    assert (seen[-1].idle_timeout_s, seen[-1].on_hole, seen[-1].max_bytes) == (5.0, "skip", 4096)  # 4096: the model's
    assert main(["predict", str(binary_model[0]), str(pcap), "-o", str(tmp_path / "v.csv"), "--quiet",
                 "--max-packets", "7"]) == 0
    assert (seen[-1].max_packets, seen[-1].idle_timeout_s) == (7, 120.0)
    with pytest.raises(ParameterError, match="'ingest_options' parameter"):
        predict_pcaps(binary_model[0], [pcap], ingest_options={"idle_timeout": 5.0})


def test_two_class_tables_without_a_malicious_class_need_the_positive_class(tmp_path):

    x, y = toy_images(60, seed=3)
    path = write_images_table(tmp_path / "ab.parquet", np.rint(x[..., 0] * 255).astype(np.uint8),
                              np.where(y == 0, "attack", "benign"), ["f"] * 60, [f"g{i % 6}" for i in range(60)])
    with pytest.raises(ParameterError, match="--positive-class"):
        train_images(path, tmp_path / "m", epochs=1)  # the old rule silently made 'benign' the positive class
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(path), "-o", str(tmp_path / "m2"), "--epochs", "1", "--positive-class", "evil"])
    assert exit_info.value.code == 2
    for argv in (["evaluate", "m", "d"], ["robustness", "m", "d", "-o", "r"], ["run", "c"]):
        from pcapvision.cli import build_parser

        assert build_parser().parse_args([*argv, "--positive-class", "attack"]).positive_class == "attack"
