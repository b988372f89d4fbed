"""Peak memory and time of reading hostile gzip captures (lying lengths, huge records).

    .venv/bin/python bench/broken_captures.py            # prints one JSON line per case

Cases: a .pcap.gz of 40 records of 4 MiB each (160 MiB decompressed, a snaplen of 16 MiB), and a
.pcapng.gz whose fourth block claims 96 MiB, which do follow (zeros). Peak memory is Python's
traced peak (tracemalloc: numpy buffers and bytes included) while iterating the records and
dropping each chunk, as ingest does.
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcapvision.ingest import capture  # noqa: E402
from tests.ingest.crafted import (  # noqa: E402
    LINKTYPE_ETHERNET,
    Interface,
    PacketSpec,
    PcapngWriter,
    Record,
    ethernet,
    pcap_bytes,
)


def _gzip(*pieces: bytes) -> bytes:
    stream = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(stream.compress(p) for p in pieces) + stream.flush()


def huge_records(directory: Path) -> Path:
    frames = [Record(1_700_000_000_000_000_000 + i, bytes(4 << 20)) for i in range(40)]
    path = directory / "huge-records.pcap.gz"
    path.write_bytes(_gzip(pcap_bytes(frames, snaplen=1 << 24)))
    return path


def lying_block(directory: Path) -> Path:
    w = PcapngWriter().section().interface(Interface(LINKTYPE_ETHERNET, 65535))
    for i in range(3):
        w.epb(Record(1_700_000_000_000_000_000 + i, ethernet(PacketSpec("10.0.0.1", "10.0.0.2", 40000, 443,
                                                                        payload=b"x" * 100).ip_packet())))
    claim = 96 << 20
    w.blocks.append(struct.pack("<II", 0x0BAD, claim))
    path = directory / "lying-block.pcapng.gz"
    path.write_bytes(_gzip(w.to_bytes(), bytes(claim)))
    return path


def measure(path: Path) -> dict:
    tracemalloc.start()
    started = time.perf_counter()
    records = 0
    for chunk in capture.iter_records(path):
        records += len(chunk)
        del chunk
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"file": path.name, "compressed_bytes": path.stat().st_size, "records": records,
            "peak_traced_mib": round(peak / 2**20, 1), "seconds": round(seconds, 2)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for make in (huge_records, lying_block):
            print(json.dumps(measure(make(Path(tmp)))))


if __name__ == "__main__":
    main()
