"""One ingest at a time per output; what a killed ingest left behind is cleaned up by the next;
inputs that are not files are named for what they are."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from pcapvision.errors import CaptureFormatError, LockedError
from pcapvision.ingest import ingest
from pcapvision.outputs import output_lock
from tests.ingest.crafted import PacketSpec, Record, ethernet, write_pcap


@pytest.fixture
def pcap(tmp_path):
    records = [Record(1_700_000_000_000_000_000 + i * 1000,
                      ethernet(PacketSpec("10.0.0.1", "10.0.0.2", 40000 + i, 443, payload=b"x" * 40).ip_packet()))
               for i in range(3)]
    return write_pcap(tmp_path / "a.pcap", records)


def test_temporaries_of_a_killed_ingest_are_removed_by_the_next(tmp_path, pcap):
    out = tmp_path / "out" / "flows.parquet"
    out.parent.mkdir()
    stale = [out.parent / ".flows.parquet.ab12cd_9.tmp", out.parent / ".flows.parquet.zz12cd34.parts"]
    stale[0].write_bytes(b"half a parquet file")
    stale[1].mkdir()
    (stale[1] / "0123.parquet").write_bytes(b"part")
    other = out.parent / ".images.parquet.ab12cd_9.tmp"  # another output's temporary: not ours to remove
    other.write_bytes(b"x")
    summary = ingest([pcap], out)
    assert summary.files_ok == 1 and pq.read_table(out).num_rows == 3
    assert not any(p.exists() for p in stale) and other.exists()
    dataset = tmp_path / "ds"
    ingest([pcap], dataset)
    leftover = dataset / ".0123456789abcdef.parquet.ab12cd_9.tmp"
    leftover.write_bytes(b"half a part")
    ingest([pcap], dataset)
    assert not leftover.exists() and len(list(dataset.glob("*.parquet"))) == 1


def test_a_second_ingest_into_the_same_output_is_refused(tmp_path, pcap):
    out = tmp_path / "flows.parquet"
    with output_lock(out, what="ingest into this output"), \
            pytest.raises(LockedError, match=r"\.flows\.parquet\.lock: another ingest into this output is running"):
        ingest([pcap], out)
    assert not out.exists()
    ingest([pcap], out)  # free again
    assert out.is_file()


def test_a_fifo_given_as_input_is_named_as_such(tmp_path):
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    with pytest.raises(CaptureFormatError, match=r"capture.pcap: not a regular file or directory \(a FIFO\)"):
        ingest([fifo], tmp_path / "flows.parquet")


def test_a_capture_name_that_is_not_utf8_is_stored_escaped(tmp_path, pcap, capsys):
    from pcapvision.cli import main

    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.pcap")  # latin-1 bytes in the name
    os.rename(pcap, odd)
    out = tmp_path / "flows.parquet"
    assert main(["ingest", odd, "-o", str(out), "--quiet"]) == 0
    assert "internal error" not in capsys.readouterr().err
    assert set(pq.read_table(out).column("source_file").to_pylist()) == {f"{tmp_path}/caf\\xe9.pcap"}
