"""Property: whatever the bytes, reading gives batches or CaptureFormatError, nothing else."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import pcap, pcapng
from pcapvision.ingest.packets import PacketBatch
from pcapvision.ingest.readers import read_packets
from tests.ingest import crafted as c


def _valid_captures() -> list[bytes]:
    records, _, _ = c.standard_records()
    ng = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET)).interface(
        c.Interface(c.LINKTYPE_LINUX_SLL2, tsresol=9))
    for i, r in enumerate(records[:12]):
        ng.epb(c.Record(r.ts_ns, r.frame if i % 2 == 0 else c.sll2(r.frame[14:]), interface=i % 2))
    ng.spb(records[0].frame).unknown()
    sll, _, _ = c.standard_records(c.LINKTYPE_LINUX_SLL)
    return [c.pcap_bytes(records), c.pcap_bytes(records, big_endian=True, nanosecond=True),
            c.pcap_bytes(sll, linktype=c.LINKTYPE_LINUX_SLL), ng.to_bytes()]


VALID = _valid_captures()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            value = draw(st.binary(min_size=1, max_size=4))
            data[at : at + len(value)] = value
    if draw(st.booleans()):
        return gzip.compress(bytes(data), mtime=0) if draw(st.booleans()) else bytes(data)
    return bytes(data)


def check_reads_or_rejects(data: bytes, reader: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.cap"
        path.write_bytes(data)
        try:
            for batch in read_packets(path, reader=reader, chunk_packets=7):
                assert isinstance(batch, PacketBatch)
                n = len(batch)
                assert all(len(a) == n for a in (batch.ts_ns, batch.src_port, batch.payload_len, batch.src_addr))
                assert (batch.payload_len >= 0).all()
                assert (batch.payload_offset + batch.payload_len <= batch.data.shape[0]).all()
        except CaptureFormatError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make gzip windows work on these small inputs too.
    monkeypatch.setattr(pcap, "GZIP_BLOCK_BYTES", 256)
    monkeypatch.setattr(pcapng, "GZIP_BLOCK_BYTES", 256)


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
@SETTINGS
@given(data=st.binary(max_size=256))
def test_random_bytes(reader: str, data: bytes) -> None:
    check_reads_or_rejects(data, reader)


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
@SETTINGS
@given(data=mutated())
def test_mutated_valid_captures(reader: str, data: bytes) -> None:
    check_reads_or_rejects(data, reader)


@SETTINGS
@given(data=mutated())
def test_auto_and_dpkt_agree_on_mutated_captures(data: bytes) -> None:
    def read(reader: str):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fuzz.cap"
            path.write_bytes(data)
            try:
                batches = list(read_packets(path, reader=reader))
            except CaptureFormatError as exc:
                return str(exc).replace(str(path), "")
            return [(b.packets(), dict(b.skipped)) for b in batches]

    assert read("auto") == read("dpkt")
