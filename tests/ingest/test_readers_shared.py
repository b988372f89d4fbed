"""All three readers agree, packet for packet and skip for skip, on every public capture."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from pcapvision.ingest.readers import read_packets

pytestmark = pytest.mark.shared


def captures(shared: Path) -> list[Path]:
    return sorted(p for p in shared.rglob("*") if p.suffix in (".pcap", ".pcapng") and p.is_file())


def digest(path: Path, reader: str) -> tuple[int, str, dict[str, int]]:
    """Packet count, a hash over every field of every packet in order, and the skip counts."""
    h = hashlib.sha256()
    n = 0
    skipped: Counter[str] = Counter()
    for batch in read_packets(path, reader=reader, chunk_packets=1000):
        for p in batch.packets():
            h.update(repr(p).encode())
        n += len(batch)
        skipped.update(batch.skipped)
    return n, h.hexdigest(), dict(skipped)


def test_auto_and_dpkt_agree_on_every_shared_capture(shared_captures: Path) -> None:
    files = captures(shared_captures)
    assert len(files) >= 70
    for path in files:
        assert digest(path, "auto") == digest(path, "dpkt"), path


@pytest.mark.slow
def test_scapy_agrees_on_every_shared_capture(shared_captures: Path) -> None:
    total = 0
    for path in captures(shared_captures):
        auto = digest(path, "auto")
        assert digest(path, "scapy") == auto, path
        total += auto[0]
    assert total > 50_000  # the comparison covered real traffic, not empty results
