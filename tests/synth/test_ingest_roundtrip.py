"""End to end with pcapvision's ingest: exact TLS byte streams, per-flow labels from labels.csv."""

from __future__ import annotations

from pathlib import Path

from pcapvision.ingest import Labeler, read_flows
from pcapvision.synth import SynthSummary


def test_ingest_reassembles_each_flow_exactly_and_labels_every_flow(corpus: SynthSummary, corpus_dir: Path) -> None:
    labeler = Labeler.from_rules_csv(corpus_dir / "labels.csv")
    truths = {(t.file, t.src_ip, t.dst_ip, t.src_port, t.dst_port): t for t in corpus.truths}
    rows = []
    for pcap in corpus.files:
        rows += [(pcap.name, r) for r in read_flows(pcap, labeler=labeler).to_pylist()]
    assert len(rows) == len(truths)
    checked_tls = 0
    for name, row in rows:
        truth = truths[(name, row["src_ip"], row["dst_ip"], row["src_port"], row["dst_port"])]
        assert (row["label"], row["family"]) == (truth.label, truth.family)
        assert row["label_source"] == f"synth:{truth.family}"
        assert row["bidirectional_packets"] == truth.packets
        # The client->server bytes the generator produced are the flow's src2dst_payload prefix,
        # even with losses, retransmissions and reordering on the "hard" preset.
        kept = row["src2dst_payload"]
        assert kept == truth.client_payload[: len(kept)]
        assert len(kept) == min(len(truth.client_payload), 4096)
        kept = row["dst2src_payload"]
        assert kept == truth.server_payload[: len(kept)]
        assert len(kept) == min(len(truth.server_payload), 4096)
        if row["protocol"] == 6 and truth.client_payload:
            checked_tls += 1
            assert row["tls_sni"] == truth.sni
            assert row["tls_version"] in ("TLS 1.2", "TLS 1.3")
            assert row["end_reason"] in ("fin", "rst")
    assert checked_tls > 100
