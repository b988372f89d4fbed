"""Property: the compiled pcap record walk agrees with a plain Python walk of the same bytes.

Random captures (both byte orders, micro- and nanosecond timestamps), truncated anywhere and with
bytes overwritten (captured lengths made impossible, records made to run past the end), are
walked by :class:`pcapvision.ingest.pcap.PcapWalker` in steps of a random number of records and
through :func:`pcapvision.ingest.capture.iter_records` (plain and gzip); both must find exactly
the records, timestamps, captured lengths and stop reason of the reference walk below.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcapvision.errors import CaptureFormatError
from pcapvision.ingest import capture, pcap
from pcapvision.ingest.records import CORRUPT, END, NEED_MORE, OK, TRUNCATED

SNAPLEN = 65535
LIMIT = 262144  # the caplen limit of a file with this snaplen (libpcap's largest snaplen)


def reference_walk(data: bytes) -> tuple[list[tuple[int, int, int]], str]:
    """(start, ts_ns, caplen) of each complete record after the file header, and why the walk stopped."""
    big = data[:4] == b"\xa1\xb2\xc3\xd4" or data[:4] == b"\xa1\xb2\x3c\x4d"
    nanosecond = data[:4] in (b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1")
    e = ">" if big else "<"
    records = []
    pos = 24
    while True:
        if pos == len(data):
            return records, END
        if pos + 16 > len(data):
            return records, TRUNCATED
        sec, frac, caplen = struct.unpack(e + "III", data[pos : pos + 12])
        if caplen > LIMIT:
            return records, CORRUPT
        if pos + 16 + caplen > len(data):
            return records, TRUNCATED
        records.append((pos, sec * 10**9 + (frac if nanosecond else frac * 1000), caplen))
        pos += 16 + caplen


@st.composite
def captures(draw) -> bytes:
    big = draw(st.booleans())
    nanosecond = draw(st.booleans())
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    data = bytearray(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, SNAPLEN, 1))
    caplen_at = []  # where each record's captured length lies
    for _ in range(draw(st.integers(0, 40))):
        caplen = draw(st.integers(0, 120))
        sec = draw(st.integers(0, 2**32 - 1))
        frac = draw(st.integers(0, 999_999_999 if nanosecond else 999_999))
        caplen_at.append(len(data) + 8)
        data += struct.pack(e + "IIII", sec, frac, caplen, caplen) + draw(st.binary(min_size=caplen, max_size=caplen))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "caplen"]))
        at = draw(st.integers(24, max(24, len(data) - 1)))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite":
            value = draw(st.binary(min_size=1, max_size=4))
            data[at : at + len(value)] = value
        elif caplen_at and caplen_at[0] + 4 <= len(data):
            # a captured length at or just past the limit, far beyond it, or ending just past
            # or exactly at the end of the data
            at = draw(st.sampled_from([a for a in caplen_at if a + 4 <= len(data)]))
            value = draw(st.sampled_from([LIMIT, LIMIT + 1, 2**32 - 1, len(data) - at - 7, len(data) - at - 8]))
            data[at : at + 4] = struct.pack(e + "I", value)
    return bytes(data)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=captures(), steps=st.lists(st.integers(0, 9), min_size=1, max_size=8), final=st.booleans())
def test_compiled_walk_matches_a_python_walk(data: bytes, steps: list[int], final: bool) -> None:
    expected, reason = reference_walk(data)
    header = pcap.parse_pcap_header(Path("x.pcap"), data[:24])
    assert header.caplen_limit == LIMIT
    walker = pcap.PcapWalker(header)
    buf = np.frombuffer(data, np.uint8)
    got: list[tuple[int, int, int]] = []
    pos, status, i = 24, OK, 0
    while status == OK:
        max_records = steps[i % len(steps)] or (1 << 40)
        i += 1
        starts, pos, status = walker.walk(buf, pos, final, max_records)
        assert starts.shape[0] <= max_records
        chunk = walker.chunk(buf, starts, len(got))
        assert np.array_equal(chunk.offset, starts + 16)
        got += zip(starts.tolist(), chunk.ts_ns.tolist(), chunk.caplen.tolist())
        assert i < 1000
    assert got == expected
    if reason == TRUNCATED and not final:
        reason = NEED_MORE
    assert status == reason
    assert pos == (expected[-1][0] + 16 + expected[-1][2] if expected else 24)


@pytest.fixture(autouse=True)
def _small_gzip_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcap, "GZIP_BLOCK_BYTES", 64)  # records span gzip windows


@SETTINGS
@given(data=captures(), compress=st.booleans(), chunk_records=st.integers(1, 9))
def test_iter_records_matches_a_python_walk(data: bytes, compress: bool, chunk_records: int) -> None:
    expected, reason = reference_walk(data)
    frames, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("a.pcap.gz" if compress else "a.pcap")
        path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
        try:
            for chunk in capture.iter_records(path, chunk_records=chunk_records):
                assert 0 < len(chunk) <= chunk_records or chunk.skipped
                frames += [(int(t), chunk.frame(k)) for k, t in enumerate(chunk.ts_ns)]
                for key, count in chunk.skipped.items():
                    skipped[key] = skipped.get(key, 0) + count
        except CaptureFormatError:
            assert not expected and reason != END
            return
    assert frames == [(ts, data[start + 16 : start + 16 + caplen]) for start, ts, caplen in expected]
    assert skipped == ({} if reason == END else {f"{reason}_record": 1})
