"""Wireshark's dissectors accept the output: handshakes and SNI dissect, nothing is malformed."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest

from pcapvision.synth import SynthSummary

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")


def _tshark(*args: str) -> str:
    # Wireshark reassembles a retransmitted segment of a multi-segment TLS record only with
    # out-of-order reassembly on; without it, 4.0 reports the identical copy as an overlap.
    command = [TSHARK, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def test_tshark_dissects_tls_and_finds_nothing_malformed(corpus: SynthSummary) -> None:
    for pcap in corpus.files:
        truths = [t for t in corpus.truths if t.file == pcap.name]
        problems = _tshark("-r", str(pcap), "-Y", "_ws.malformed || _ws.expert.severity == error")
        assert problems.strip() == "", f"{pcap.name}:\n{problems[:2000]}"
        hellos = _tshark("-r", str(pcap), "-Y", "tls.handshake.type == 1", "-T", "fields",
                         "-e", "tcp.srcport", "-e", "tls.handshake.extensions_server_name")
        seen = {int(port): sni or None for port, _, sni in (line.partition("\t") for line in hellos.splitlines())}
        tls = {t.src_port: t.sni for t in truths if t.protocol == "tcp" and t.client_payload}
        assert seen == tls
        server_hellos = _tshark("-r", str(pcap), "-Y", "tls.handshake.type == 2", "-T", "fields", "-e", "tcp.dstport")
        assert Counter(int(p) for p in server_hellos.split()) == Counter(list(tls))
        queries = _tshark("-r", str(pcap), "-Y", "dns.flags.response == 0", "-T", "fields", "-e", "dns.qry.name")
        assert len(queries.split()) == sum(1 for t in truths if t.family == "dns")
