"""predict: traffic-controlled strings cannot become spreadsheet formulas, and one bad capture
never costs the verdicts of the others."""

from __future__ import annotations

import pandas as pd
import pytest

from pcapvision.classify import build_mlp, save_model
from pcapvision.classify.predict import csv_safe, csv_safe_cell, predict_pcaps
from pcapvision.io import make_metadata
from tests.ingest.crafted import PacketSpec, Record, arp_frame, ethernet, write_pcap


@pytest.fixture(scope="module")
def traffic_model(tmp_path_factory):
    """An untrained traffic model with the metadata predict needs (its verdicts do not matter here)."""
    from pcapvision.imaging import get_representation

    rep = get_representation("payload", None)
    out = tmp_path_factory.mktemp("predict") / "model"
    save_model(build_mlp((28, 28, 1), 2), out, make_metadata(
        "classify", {"threshold": 0.5}, class_names=["=cmd|' /C calc'!A0", "normal"], target="label",
        positive_class="=cmd|' /C calc'!A0",
        representation=rep.name, representation_params=rep.params,
        images_schema={"params": {"mask_tls_sni": False, "group_by": "capture"}, "input": {"flows_params": {}}},
    ))
    return out


def _flows_pcap(path, n=3):
    records = [Record(1_700_000_000_000_000_000 + i * 1000, ethernet(
        PacketSpec(f"10.0.0.{i + 2}", "10.0.1.1", 40000 + i, 443, payload=b"\x16\x03\x01" + bytes(60)).ip_packet()))
        for i in range(n)]
    return write_pcap(path, records)


@pytest.mark.parametrize(("cell", "expected"), [
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'), ("+1+cmd", "'+1+cmd"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\r=1", "'\r=1"), ("-1.5", "-1.5"), ("+7", "+7"),
    ("example.com", "example.com"), (3.5, 3.5), (None, None),
])
def test_csv_cells_that_would_be_formulas_are_neutralised(cell, expected):
    assert csv_safe_cell(cell) == expected


def test_predict_csv_holds_no_live_formula_but_parquet_keeps_the_exact_strings(traffic_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # source_file is then the file name an attacker chose
    pcap = _flows_pcap(tmp_path / '=HYPERLINK("http:x").pcap').name
    verdicts = predict_pcaps(traffic_model, [pcap], "v.csv")
    predict_pcaps(traffic_model, [pcap], "v.parquet")
    back = pd.read_csv(tmp_path / "v.csv")
    cells = [str(v) for v in back.to_numpy().ravel()]
    assert not [c for c in cells if c[:1] in ("=", "@", "+", "\t", "\r")], "a cell opens as a formula"
    assert set(back["source_file"]) == {'\'=HYPERLINK("http:x").pcap'}
    predicted = csv_safe(verdicts.assign(predicted="=cmd|' /C calc'!A0"))["predicted"]
    assert set(predicted) == {"'=cmd|' /C calc'!A0"}
    exact = pd.read_parquet(tmp_path / "v.parquet")
    assert set(exact["source_file"]) == {'=HYPERLINK("http:x").pcap'}


def test_a_bad_capture_costs_only_its_own_verdicts(traffic_model, tmp_path, capsys):
    from pcapvision.cli import main

    good = _flows_pcap(tmp_path / "good.pcap")
    truncated = tmp_path / "bad.pcap"
    truncated.write_bytes(b"\xd4\xc3\xb2\xa1 not a capture")
    no_ip = write_pcap(tmp_path / "arp.pcap", [Record(1_700_000_000_000_000_000, arp_frame())])
    out = tmp_path / "v.parquet"
    code = main(["predict", str(traffic_model), str(truncated), str(no_ip), str(good), "-o", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "1 capture(s) failed" in captured.err and "bad.pcap" in captured.err
    verdicts = pd.read_parquet(out)
    assert sorted(set(verdicts["source_file"])) == [str(good)] and len(verdicts) == 3
    only_arp = predict_pcaps(traffic_model, [no_ip], tmp_path / "none.csv")
    assert len(only_arp) == 0 and not only_arp.attrs["failed_captures"]
    assert (tmp_path / "none.csv").read_text().startswith("source_file,flow_id")
