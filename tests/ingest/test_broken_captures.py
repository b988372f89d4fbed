"""Broken containers cost only what is broken: a truncated or corrupt gzip keeps every complete
record before the break, a capture with no usable record is a failed file, and lying lengths
never make the reader buffer far more than its window."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib

import pytest

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import capture
from tests.ingest.crafted import (
    LINKTYPE_ETHERNET,
    Interface,
    PacketSpec,
    PcapngWriter,
    Record,
    ethernet,
    pcap_bytes,
)

N_RECORDS = 400


def _records(n=N_RECORDS, size=200):
    return [Record(1_700_000_000_000_000_000 + i * 1_000_000,
                   ethernet(PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443, payload=bytes([i % 251]) * size).ip_packet()))
            for i in range(n)]


def _count(path, chunk_records=65536):
    return sum(len(chunk) for chunk in capture.iter_records(path, chunk_records))


def _prefix_of_stream(data: bytes) -> bytes:
    """What an incremental decompressor recovers from a truncated gzip (the oracle)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


@pytest.mark.parametrize("chunk_records", [65536, 7])
def test_truncated_pcap_gz_keeps_every_complete_record_before_the_break(tmp_path, chunk_records):
    plain = pcap_bytes(_records())
    packed = gzip.compress(plain, mtime=0)
    cut = packed[: len(packed) * 6 // 10]
    (tmp_path / "cut.pcap.gz").write_bytes(cut)
    (tmp_path / "prefix.pcap").write_bytes(_prefix_of_stream(cut))  # the same bytes, uncompressed
    kept = _count(tmp_path / "cut.pcap.gz", chunk_records)
    assert 0 < kept < N_RECORDS
    assert kept == _count(tmp_path / "prefix.pcap", chunk_records)


def test_corrupt_gzip_keeps_what_was_before_the_corruption(tmp_path):
    packed = bytearray(gzip.compress(pcap_bytes(_records()), compresslevel=1, mtime=0))
    middle = len(packed) // 2
    packed[middle:middle + 64] = bytes(64)  # garbage in the deflate stream
    (tmp_path / "bad.pcap.gz").write_bytes(bytes(packed))
    assert 0 < _count(tmp_path / "bad.pcap.gz") < N_RECORDS


def test_concatenated_and_zero_padded_gzip_members_are_read_whole(tmp_path):
    plain = pcap_bytes(_records())
    half = 24 + (len(plain) - 24) // 2
    # split at a record boundary: find it by walking the record headers
    pos = 24
    while pos < half:
        pos += 16 + struct.unpack_from("<I", plain, pos + 8)[0]
    (tmp_path / "two.pcap.gz").write_bytes(gzip.compress(plain[:pos], mtime=0) + gzip.compress(plain[pos:], mtime=0)
                                           + bytes(512))
    assert _count(tmp_path / "two.pcap.gz") == N_RECORDS


@pytest.mark.parametrize("cut_at", [10, 30])
def test_gzip_broken_before_the_first_record_is_a_failed_file(tmp_path, cut_at):
    plain = pcap_bytes(_records(5))
    packed = gzip.compress(plain, mtime=0)
    stream = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    # a stream whose decompressed prefix ends inside the first record (cut_at bytes into it)
    head = stream.compress(plain[: 24 + cut_at]) + stream.flush(zlib.Z_SYNC_FLUSH)
    (tmp_path / "early.pcap.gz").write_bytes(head)
    assert packed  # (the complete file reads fine)
    with pytest.raises(CaptureFormatError, match="no complete record before the capture breaks off"):
        _count(tmp_path / "early.pcap.gz")


@pytest.mark.parametrize("which", ["shb", "idb"])
def test_pcapng_with_a_corrupt_header_length_is_a_failed_file(tmp_path, which):
    w = PcapngWriter().section().interface(Interface(LINKTYPE_ETHERNET, 65535))
    for r in _records(3):
        w.epb(r)
    data = bytearray(w.to_bytes())
    at = 0 if which == "shb" else len(w.blocks[0])
    struct.pack_into("<I", data, at + 4, 0x7FFFFFF0)  # the block claims ~2 GiB
    (tmp_path / "bad.pcapng").write_bytes(bytes(data))
    (tmp_path / "bad.pcapng.gz").write_bytes(gzip.compress(bytes(data), mtime=0))
    for name in ("bad.pcapng", "bad.pcapng.gz"):
        with pytest.raises(CaptureFormatError, match="no complete record"):
            _count(tmp_path / name)


def test_pcapng_block_with_a_huge_length_is_refused_without_buffering_it(tmp_path):
    w = PcapngWriter().section().interface(Interface(LINKTYPE_ETHERNET, 65535))
    for r in _records(3):
        w.epb(r)
    claim = 96 << 20
    w.blocks.append(struct.pack("<II", 0x0BAD, claim))  # an unknown block claiming 96 MiB...
    data = w.to_bytes()
    stream = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    packed = stream.compress(data) + stream.compress(bytes(claim)) + stream.flush()  # ...which do follow
    (tmp_path / "huge.pcapng.gz").write_bytes(packed)
    tracemalloc.start()
    try:
        kept = _count(tmp_path / "huge.pcapng.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == 3
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_pcap_gz_of_huge_records_stays_near_the_window(tmp_path):
    big = 4 << 20
    frames = [Record(1_700_000_000_000_000_000 + i, bytes(big)) for i in range(40)]  # 160 MiB decompressed
    data = pcap_bytes(frames, snaplen=1 << 24)
    stream = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    (tmp_path / "huge.pcap.gz").write_bytes(stream.compress(data) + stream.flush())
    del data, frames
    tracemalloc.start()
    try:
        kept = 0
        for chunk in capture.iter_records(tmp_path / "huge.pcap.gz"):
            kept += len(chunk)
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == 40
    assert peak < 150 << 20, f"peak {peak / 2**20:.0f} MiB for 160 MiB of records (was 360 MiB)"
