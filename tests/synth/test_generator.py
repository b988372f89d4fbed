"""generate(): files, ground truth, labels.csv, families and classes, reproducibility, parameters."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import dpkt
import pytest

from pcapvision.errors import ParameterError
from pcapvision.synth import FAMILIES, LABEL_COLUMNS, SynthSummary, generate, parse_mix, plan_traffic

from .conftest import CORPUS


def _pcap_flows(path: Path) -> dict[tuple, dict]:
    """5-tuple (initiator first) -> packet count, payload bytes and first timestamp, read with dpkt."""
    flows: dict[tuple, dict] = {}
    with open(path, "rb") as fh:
        for ts, frame in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(frame).data
            l4 = ip.data
            src, dst = dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst)
            proto = "tcp" if isinstance(l4, dpkt.tcp.TCP) else "udp"
            key = (src, dst, l4.sport, l4.dport, proto)
            back = (dst, src, l4.dport, l4.sport, proto)
            if back in flows:
                key = back
            info = flows.setdefault(key, {"packets": 0, "payload": 0, "first": ts})
            info["packets"] += 1
            info["payload"] += len(l4.data)
    return flows


def test_outputs_one_pcap_per_host_with_labels_and_manifest(corpus: SynthSummary, corpus_dir: Path) -> None:
    names = sorted(p.name for p in corpus_dir.glob("*.pcap"))
    assert names == ["infected-host00.pcap", "infected-host01.pcap", "normal-host00.pcap", "normal-host01.pcap"]
    manifest = json.loads((corpus_dir / "synth.json").read_text())
    assert manifest["stage"] == "synth" and manifest["params"]["seed"] == CORPUS["seed"]
    assert sum(f["flows"] for f in manifest["files"]) == corpus.flows
    assert "cryptography" in json.dumps(manifest) or "scapy" in manifest["library_versions"]
    assert corpus.packets == sum(f["packets"] for f in manifest["files"])
    assert corpus.bytes == sum(p.stat().st_size for p in corpus_dir.glob("*.pcap"))
    assert "flows:" in corpus.format() and "packets:" in corpus.format()


def test_labels_csv_has_one_row_per_flow_in_the_pcaps(corpus: SynthSummary, corpus_dir: Path) -> None:
    with open(corpus_dir / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        rows = list(reader)
    assert len(rows) == corpus.flows
    labelled = {(r["file"], r["src_ip"], r["dst_ip"], int(r["src_port"]), int(r["dst_port"]), r["protocol"]): r for r in rows}
    assert len(labelled) == len(rows)  # 5-tuples are unique per file, so rules cannot shadow each other
    seen = 0
    for pcap in corpus.files:
        for (src, dst, sport, dport, proto), info in _pcap_flows(pcap).items():
            row = labelled[(pcap.name, src, dst, sport, dport, proto)]
            assert row["label"] in ("normal", "malicious") and row["rule_id"] == f"synth:{row['family']}"
            seen += 1
    assert seen == len(rows)


def test_truth_matches_the_packets(corpus: SynthSummary) -> None:
    by_file = defaultdict(dict)
    for pcap in corpus.files:
        by_file[pcap.name] = _pcap_flows(pcap)
    for truth in corpus.truths:
        info = by_file[truth.file][(truth.src_ip, truth.dst_ip, truth.src_port, truth.dst_port, truth.protocol)]
        assert info["packets"] == truth.packets
        assert abs(info["first"] * 1e6 - truth.first_seen_ns / 1e3) <= 1.0  # pcap keeps microseconds
        if truth.family == "port-scan":
            assert info["payload"] == 0 and not truth.client_payload
        else:
            assert info["payload"] >= len(truth.client_payload[:1]) + len(truth.server_payload[:1])


def test_every_family_both_classes_and_realistic_hosts(corpus: SynthSummary) -> None:
    families = Counter(t.family for t in corpus.truths)
    assert set(FAMILIES) | {"dns"} == set(families)
    for truth in corpus.truths:
        expected = FAMILIES[truth.family].label if truth.family != "dns" else truth.label
        assert truth.label == expected
    by_file = defaultdict(Counter)
    for truth in corpus.truths:
        by_file[truth.file][truth.label] += 1
    for name, labels in by_file.items():
        if name.startswith("normal"):
            assert set(labels) == {"normal"}
        else:  # infected hosts also carry benign background traffic
            assert labels["malicious"] > 0 and labels["normal"] > 0
    assert any(":" in t.dst_ip for t in corpus.truths if t.protocol == "tcp")  # some IPv6
    assert any(t.protocol == "udp" and t.dst_port == 53 for t in corpus.truths)
    tls = [t for t in corpus.truths if t.client_payload and t.protocol == "tcp"]
    assert all(t.client_payload[:1] == b"\x16" and t.client_payload[5] == 1 for t in tls)  # ClientHello first


def test_beacons_are_periodic_and_near_constant_on_easy(tmp_path: Path) -> None:
    summary = generate(tmp_path, flows=60, seed=4, difficulty="easy", mix={name: 0 for name in FAMILIES} | {"c2-beacon": 1},
                       hosts_per_class=1, quiet=True)
    beacons = sorted((t for t in summary.truths if t.family == "c2-beacon"), key=lambda t: t.first_seen_ns)
    assert len(beacons) >= 20
    by_server = defaultdict(list)
    for b in beacons:
        by_server[b.dst_ip].append(b)
    for flows in by_server.values():
        gaps = [(b.first_seen_ns - a.first_seen_ns) / 1e9 for a, b in zip(flows, flows[1:])]
        assert max(gaps) / min(gaps) < 1.9  # jitter stays within +-30%
        assert all(f.sni is None or not f.sni.startswith("www.") for f in flows)
    assert {t.label for t in summary.truths} <= {"malicious", "normal"}
    assert all(t.family == "dns" for t in summary.truths if t.label == "normal")  # nothing but its own lookups


def test_same_seed_same_plan_and_labels_different_seed_differs(tmp_path: Path) -> None:
    def plan_view(seed: int):
        return [(h.host, [(c.family, c.start_s, c.server, c.sni, c.messages, c.client_hello) for c in h.connections])
                for h in plan_traffic(80, seed, "realistic", hosts_per_class=2)]

    assert plan_view(9) == plan_view(9)
    assert plan_view(9) != plan_view(10)
    a = generate(tmp_path / "a", flows=40, seed=9, hosts_per_class=1, quiet=True)
    b = generate(tmp_path / "b", flows=40, seed=9, hosts_per_class=1, quiet=True)
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv").read_bytes()
    assert [(t.src_ip, t.dst_ip, t.src_port, t.first_seen_ns, t.sni) for t in a.truths] == \
           [(t.src_ip, t.dst_ip, t.src_port, t.first_seen_ns, t.sni) for t in b.truths]
    # TLS randoms and keys are not seeded: the same flows carry different ciphertext.
    assert [t.client_payload for t in a.truths if t.protocol == "tcp" and t.client_payload] != \
           [t.client_payload for t in b.truths if t.protocol == "tcp" and t.client_payload]


def test_difficulty_presets_change_overlap(tmp_path: Path) -> None:
    from pcapvision.synth.profiles import MINIMAL_HELLOS

    def malicious_browser_share(difficulty: str) -> float:
        plans = [c for h in plan_traffic(600, 1, difficulty) for c in h.connections
                 if c.label == "malicious" and c.client_hello is not None]
        return sum(c.client_hello.browser_like for c in plans) / len(plans)

    def normal_minimal_share(difficulty: str) -> float:
        plans = [c for h in plan_traffic(600, 1, difficulty) for c in h.connections if c.label == "normal"]
        return sum(c.client_hello in MINIMAL_HELLOS for c in plans) / len(plans)

    assert malicious_browser_share("easy") == 0 and normal_minimal_share("easy") == 0
    assert 0 < malicious_browser_share("realistic") < malicious_browser_share("hard")
    assert 0 < normal_minimal_share("realistic") < normal_minimal_share("hard")


def test_max_flow_kib_caps_application_bytes() -> None:
    for host in plan_traffic(200, 3, "realistic", max_flow_kib=2):
        for conn in host.connections:
            sizes = [m.size for m in conn.messages]
            assert sum(sizes[2:]) == 0 or sum(sizes) <= 2048


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"flows": 0}, "'flows' parameter must be a positive int. Got 0"),
    ({"seed": -1}, "'seed' parameter must be an int >= 0"),
    ({"difficulty": "medium"}, "'difficulty' parameter must be one of"),
    ({"mix": {"nope": 1.0}}, "'mix' parameter must be one of"),
    ({"mix": {"c2-beacon": -1.0}}, r"'mix\[c2-beacon\]' parameter must be a number"),
    ({"mix": {name: 0.0 for name in FAMILIES}}, "some family a positive weight"),
    ({"loss_rate": 0.7}, r"'loss_rate' parameter must be a number in \[0.0, 0.5\]"),
])
def test_bad_parameters_raise_parameter_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        generate(tmp_path, **kwargs)
    assert not list(tmp_path.glob("*.pcap"))


def test_parse_mix() -> None:
    assert parse_mix("c2-beacon=2, port-scan=0") == {"c2-beacon": 2.0, "port-scan": 0.0}
    assert parse_mix("") == {}
    with pytest.raises(ParameterError, match="FAMILY=WEIGHT"):
        parse_mix("c2-beacon")
    with pytest.raises(ParameterError, match="numeric"):
        parse_mix("c2-beacon=lots")


@pytest.mark.parametrize("hosts", [2, 3, 5])
def test_every_malicious_family_lives_on_two_infected_hosts(hosts: int) -> None:
    plans = plan_traffic(300 * hosts, 0, "realistic", hosts_per_class=hosts)
    infected = [h for h in plans if h.host.infected]
    assert len(infected) == hosts and not any(h.families for h in plans if not h.host.infected)
    for family in (name for name, f in FAMILIES.items() if f.label == "malicious"):
        carriers = [h for h in infected if family in h.families]
        assert len(carriers) >= 2
        assert all(c.family != family for h in plans if family not in h.families for c in h.connections)


def test_loss_and_reorder_rates_override_the_preset(tmp_path: Path) -> None:
    """On "easy" nothing is lost; with a loss rate, segments are retransmitted (seen twice)."""
    def duplicated_segments(**kwargs) -> int:
        summary = generate(tmp_path / str(len(kwargs)), flows=30, seed=5, difficulty="easy", hosts_per_class=1,
                           mix={"bulk-download": 1.0, "exfiltration": 1.0}, max_flow_kib=32, quiet=True, **kwargs)
        seen, duplicates = set(), 0
        for pcap in summary.files:
            with open(pcap, "rb") as fh:
                for _, frame in dpkt.pcap.Reader(fh):
                    tcp = dpkt.ethernet.Ethernet(frame).data.data
                    if isinstance(tcp, dpkt.tcp.TCP) and tcp.data:
                        key = (tcp.sport, tcp.dport, tcp.seq)
                        duplicates += key in seen
                        seen.add(key)
        assert json.loads((summary.output_dir / "synth.json").read_text())["params"]["loss_rate"] == kwargs.get(
            "loss_rate", 0.0)
        return duplicates

    assert duplicated_segments() == 0
    assert duplicated_segments(loss_rate=0.1) > 5
