"""The bundled sample_pcaps/: what its README promises holds for the files in the repository."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import dpkt
import pytest

from pcapvision.io import sha256_file

SAMPLE = Path(__file__).resolve().parents[2] / "sample_pcaps"
pytestmark = pytest.mark.skipif(not (SAMPLE / "labels.csv").is_file(), reason="sample_pcaps/ not generated")


def test_sample_is_small_labelled_and_has_enough_payload_flows() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.iterdir() if p.is_file())
    assert total < 8_000_000
    with open(SAMPLE / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = {(r["file"], r["src_ip"], r["dst_ip"], int(r["src_port"]), int(r["dst_port"])): r for r in rows}
    pcaps = sorted(SAMPLE.glob("*.pcap"))
    assert sum(p.name.startswith("normal-") for p in pcaps) >= 3 and sum(p.name.startswith("infected-") for p in pcaps) >= 3
    payload_flows: set[tuple] = set()
    seen: set[tuple] = set()
    for pcap in pcaps:
        with open(pcap, "rb") as fh:
            for _, frame in dpkt.pcap.Reader(fh):
                ip = dpkt.ethernet.Ethernet(frame).data
                l4 = ip.data
                src, dst = dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst)
                key = (pcap.name, src, dst, l4.sport, l4.dport)
                if key not in keys:
                    key = (pcap.name, dst, src, l4.dport, l4.sport)
                assert key in keys, f"{pcap.name}: packet of an unlabelled flow {key}"
                seen.add(key)
                if l4.data:
                    payload_flows.add(key)
    assert seen == set(keys)
    assert len(payload_flows) >= 2000
    assert {r["label"] for r in rows} == {"normal", "malicious"}


def test_manifest_and_readme_describe_these_files() -> None:
    manifest = json.loads((SAMPLE / "synth.json").read_text())
    for record in manifest["files"]:
        assert sha256_file(SAMPLE / record["file"]) == record["sha256"]
    readme = (SAMPLE / "README.md").read_text()
    params = manifest["params"]
    command = re.search(r"pcapvision synth -o sample_pcaps[^\n`]*", readme)
    assert command, "README.md gives the exact command"
    expected = (f"--flows {params['flows']} --seed {params['seed']} --difficulty {params['difficulty']} "
                f"--max-flow-kib {params['max_flow_kib']}")
    assert expected in command.group(0)
