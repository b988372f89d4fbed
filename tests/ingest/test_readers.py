"""Capture readers on crafted captures: formats, link types, skip reasons, timestamps, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pcapvision.errors import CaptureFormatError, InputNotFoundError, ParameterError
from pcapvision.ingest import capture, pcap, pcapng
from pcapvision.ingest.packets import Packet
from pcapvision.ingest.readers import READERS, capture_info, read_packets
from tests.ingest import crafted as c


def read_all(path: Path, reader: str = "auto", chunk_packets: int = 65536) -> tuple[list[Packet], dict[str, int]]:
    packets: list[Packet] = []
    skipped: Counter[str] = Counter()
    for batch in read_packets(path, reader=reader, chunk_packets=chunk_packets):
        packets += batch.packets()
        skipped.update(batch.skipped)
    return packets, dict(skipped)


@pytest.fixture
def tiny_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise gzip windows on tiny captures."""
    monkeypatch.setattr(pcap, "GZIP_BLOCK_BYTES", 300)
    monkeypatch.setattr(pcapng, "GZIP_BLOCK_BYTES", 300)


LINKTYPES = [c.LINKTYPE_ETHERNET, c.LINKTYPE_LINUX_SLL, c.LINKTYPE_LINUX_SLL2, c.LINKTYPE_NULL,
             c.LINKTYPE_LOOP, c.LINKTYPE_RAW, c.LINKTYPE_IPV4, c.LINKTYPE_IPV6, 12, 14]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("linktype", LINKTYPES)
def test_every_link_type_gives_the_expected_packets_and_skips(tmp_path: Path, reader: str, linktype: int) -> None:
    records, expected, skipped = c.standard_records(linktype)
    path = c.write_pcap(tmp_path / "a.pcap", records, linktype=linktype)
    assert read_all(path, reader) == (expected, skipped)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("big_endian", "nanosecond", "compress"),
                         [(False, False, False), (True, False, False), (False, True, False),
                          (True, True, False), (False, False, True), (True, True, True)])
def test_pcap_variants_read_alike(tmp_path: Path, reader: str, big_endian: bool, nanosecond: bool,
                                  compress: bool) -> None:
    step = 1_234_567 if nanosecond else 1_234_000
    records, expected, skipped = c.standard_records(step_ns=step)
    path = c.write_pcap(tmp_path / "a.pcap", records, big_endian=big_endian, nanosecond=nanosecond,
                        compress=compress)
    assert read_all(path, reader) == (expected, skipped)


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
@pytest.mark.parametrize("compress", [False, True])
def test_walker_windows_and_blocks_do_not_change_the_result(tmp_path: Path, tiny_windows: None, reader: str,
                                                            compress: bool) -> None:
    records, expected, skipped = c.standard_records()
    records = records * 7  # frame indices and timestamps no longer unique: irrelevant here
    path = c.write_pcap(tmp_path / "a.pcap", records, compress=compress)
    plain = c.write_pcap(tmp_path / "b.pcap", records)
    for chunk in (1, 4, 1000):
        got = read_all(path, reader, chunk)
        assert got[1] == {k: 7 * v for k, v in skipped.items()}
        assert got == read_all(plain, "scapy", chunk)


def test_walker_finds_exactly_the_records_of_a_plain_walk(tmp_path: Path, tiny_windows: None) -> None:
    # Payloads full of the timestamp's bytes look like record headers; timestamps cross a
    # 2**16-second boundary; sizes vary from 0 to 1500; chunks end mid-capture.
    rng = np.random.default_rng(3)
    boundary_ns = (0x6553_0000 * 1_000_000_000) - 500_000_000
    records = []
    for i in range(3000):
        ts = boundary_ns + i * 400_000
        pattern = struct.pack("<I", ts // 1_000_000_000)
        payload = (pattern * 400)[: int(rng.integers(0, 1500))]
        frame = c.ethernet(c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2, protocol="udp", payload=payload).ip_packet())
        records.append(c.Record(ts, frame))
    path = c.write_pcap(tmp_path / "a.pcap", records)
    starts = []
    for chunk in capture.iter_records(path, chunk_records=777):
        starts += (chunk.offset - 16).tolist()
        assert np.array_equal(chunk.ts_ns, [r.ts_ns for r in records[chunk.frame_index[0]:][: len(chunk)]])
    expected, pos = [], 24
    for r in records:
        expected.append(pos)
        pos += 16 + len(r.frame)
    assert starts == expected


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_with_interfaces_of_different_link_types(tmp_path: Path, reader: str, big_endian: bool) -> None:
    interfaces = [c.Interface(c.LINKTYPE_ETHERNET), c.Interface(c.LINKTYPE_LINUX_SLL, tsresol=9),
                  c.Interface(c.LINKTYPE_RAW, tsresol=0x80 | 20), c.Interface(c.LINKTYPE_LINUX_SLL2, tsresol=3),
                  c.Interface(c.LINKTYPE_NULL, tsresol=9)]
    records, expected = [], []
    for i, spec in enumerate(c.standard_specs()):
        iface = i % len(interfaces)
        # Whole seconds plus multiples of 0.125 s: exact at every resolution above.
        ts = c.T0_NS - c.T0_NS % 1_000_000_000 + i * 125_000_000
        records.append(c.Record(ts, c.frame_for(interfaces[iface].linktype, spec.ip_packet()), interface=iface))
        expected.append(spec.expected(ts, i))
    path = c.write_pcapng(tmp_path / "a.pcapng", interfaces, records, big_endian=big_endian)
    assert read_all(path, reader) == (expected, {})


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_pcapng_timestamp_offset_and_resolutions(tmp_path: Path, reader: str) -> None:
    spec = c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2, protocol="udp", payload=b"t")
    ts = 1_700_000_000_123_456_789
    interfaces = [c.Interface(c.LINKTYPE_RAW, tsresol=9, tsoffset_s=1_600_000_000),
                  c.Interface(c.LINKTYPE_RAW, tsresol=0x80 | 30),
                  c.Interface(c.LINKTYPE_RAW, tsresol=12, tsoffset_s=1_700_000_000)]  # 64-bit ps need an offset
    w = c.PcapngWriter().section()
    for iface in interfaces:
        w.interface(iface)
    for i in range(3):
        w.epb(c.Record(ts, spec.ip_packet(), interface=i))
    packets, _ = read_all(w.write(tmp_path / "a.pcapng"), reader)
    assert packets[0].ts_ns == ts  # offset seconds plus 1e-9 ticks: exact
    assert packets[1].ts_ns == (c.ticks_for(ts, interfaces[1]) * 10**9) >> 30  # floor of 2**-30 ticks
    assert packets[2].ts_ns == ts  # picoseconds, floored to ns


@pytest.mark.parametrize("reader", READERS)
def test_pcapng_simple_and_obsolete_packet_blocks_and_unknown_blocks(tmp_path: Path, reader: str) -> None:
    specs = c.standard_specs()[:3]
    w = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET, snaplen=65535))
    w.unknown().epb(c.Record(c.T0_NS, c.ethernet(specs[0].ip_packet())))
    w.spb(c.ethernet(specs[1].ip_packet())).unknown(0x80000001, b"custom")
    w.pb(c.Record(c.T0_NS + 5000, c.ethernet(specs[2].ip_packet())))
    packets, skipped = read_all(w.write(tmp_path / "a.pcapng"), reader)
    # The simple packet block has no timestamp: it takes the previous packet's.
    assert packets == [specs[0].expected(c.T0_NS, 0), specs[1].expected(c.T0_NS, 1),
                       specs[2].expected(c.T0_NS + 5000, 2)]
    assert skipped == {}


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_pcapng_unsupported_interface_is_skipped_when_others_are_fine(tmp_path: Path, reader: str) -> None:
    spec = c.standard_specs()[3]
    w = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET)).interface(c.Interface(147))
    w.epb(c.Record(c.T0_NS, b"\x00" * 30, interface=1)).epb(c.Record(c.T0_NS, c.ethernet(spec.ip_packet())))
    assert read_all(w.write(tmp_path / "a.pcapng"), reader) == (
        [spec.expected(c.T0_NS, 1)], {"unsupported_link_type": 1})
    only = c.PcapngWriter().section().interface(c.Interface(147)).epb(c.Record(c.T0_NS, b"\x00" * 30))
    with pytest.raises(CaptureFormatError, match="link type 147"):
        read_all(only.write(tmp_path / "b.pcapng"), reader)


@pytest.mark.parametrize("reader", READERS)
def test_vlan_and_qinq_tags(tmp_path: Path, reader: str) -> None:
    spec = c.standard_specs()[4]
    frames = [c.ethernet(spec.ip_packet(), vlan=(10,)),
              c.ethernet(spec.ip_packet(), vlan=(100, 10), outer_tpid=0x88A8),
              c.ethernet(spec.ip_packet(), vlan=(100, 10), outer_tpid=0x9100),
              c.ethernet(spec.ip_packet(), vlan=(100, 10), outer_tpid=0x8100)]
    path = c.write_pcap(tmp_path / "a.pcap", [c.Record(c.T0_NS, f) for f in frames])
    expected = [dataclasses.replace(spec.expected(c.T0_NS, i), vlan_id=vlan) for i, vlan in enumerate((10, 100, 100, 100))]
    assert read_all(path, reader) == (expected, {})


@pytest.mark.parametrize("reader", READERS)
def test_ethernet_padding_never_becomes_payload(tmp_path: Path, reader: str) -> None:
    ack = c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2, flags="A")
    tiny_udp = c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2, protocol="udp", payload=b"ab")
    frames = [c.ethernet(ack.ip_packet()), c.ethernet(tiny_udp.ip_packet())]
    assert all(len(f) == 60 for f in frames)
    path = c.write_pcap(tmp_path / "a.pcap", [c.Record(c.T0_NS, f) for f in frames])
    packets, _ = read_all(path, reader)
    assert [(p.payload, p.ip_bytes) for p in packets] == [(b"", 40), (b"ab", 30)]


@pytest.mark.parametrize("reader", READERS)
def test_snaplen_cut_packets_keep_their_ip_length_and_captured_payload(tmp_path: Path, reader: str) -> None:
    spec = c.standard_specs()[4]  # 1200-byte payload
    frame = c.ethernet(spec.ip_packet())
    cut = c.ethernet(c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2).ip_packet())[:30]  # IP header cut
    path = c.write_pcap(tmp_path / "a.pcap", [c.Record(c.T0_NS, frame[:100], orig_len=len(frame)),
                                              c.Record(c.T0_NS, cut, orig_len=60)], snaplen=100)
    packets, skipped = read_all(path, reader)
    assert [(p.ip_bytes, p.payload) for p in packets] == [(len(spec.ip_packet()), spec.payload[: 100 - 54])]
    assert skipped == {"truncated_header": 1}


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_tcp_segmentation_offload_zero_ip_length_means_all_captured(tmp_path: Path, reader: str) -> None:
    spec = c.PacketSpec("10.0.0.1", "10.0.0.2", 1, 2, payload=b"z" * 3000)
    packet = spec.ip_packet()
    packet = packet[:2] + b"\x00\x00" + packet[4:]
    packets, _ = read_all(c.write_pcap(tmp_path / "a.pcap", [c.Record(c.T0_NS, c.ethernet(packet))]), reader)
    assert [(p.ip_bytes, p.payload) for p in packets] == [(len(packet), spec.payload)]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("compress", [False, True])
def test_truncated_last_record_keeps_the_rest_and_warns(tmp_path: Path, reader: str, compress: bool,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    records, expected, skipped = c.standard_records()
    data = c.pcap_bytes(records)[:-10]
    path = tmp_path / "a.pcap"
    path.write_bytes(gzip.compress(data) if compress else data)
    with caplog.at_level(logging.WARNING, logger="pcapvision"):
        packets, got_skipped = read_all(path, reader)
    last_is_packet = expected[-1].frame_index == len(records) - 1
    assert packets == (expected[:-1] if last_is_packet else expected)
    assert got_skipped["truncated_record"] == 1
    if reader != "scapy":
        assert "truncated" in caplog.text


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_truncated_record_header_counts_too(tmp_path: Path, reader: str) -> None:
    records, expected, _ = c.standard_records(with_skipped=False)
    data = c.pcap_bytes(records) + b"\x01\x02\x03"  # a third of a record header
    path = tmp_path / "a.pcap"
    path.write_bytes(data)
    packets, skipped = read_all(path, reader)
    assert (packets, skipped) == (expected, {"truncated_record": 1})


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_corrupt_pcap_record_length_stops_with_what_was_read(tmp_path: Path, reader: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    records, expected, _ = c.standard_records(with_skipped=False)
    data = bytearray(c.pcap_bytes(records, snaplen=65535))
    third = 24 + sum(16 + len(r.frame) for r in records[:2])
    data[third + 8 : third + 12] = struct.pack("<I", 10_000_000)  # caplen of record 2
    path = tmp_path / "a.pcap"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pcapvision"):
        assert read_all(path, reader) == (expected[:2], {"corrupt_record": 1})
    assert "record 2" in caplog.text


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
def test_pcapng_corrupt_packet_block_is_skipped_and_bad_block_length_stops(tmp_path: Path, reader: str) -> None:
    specs = c.standard_specs()
    w = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET))
    w.epb(c.Record(c.T0_NS, c.ethernet(specs[0].ip_packet())))
    w.epb(c.Record(c.T0_NS, c.ethernet(specs[1].ip_packet())), caplen=5000)  # caplen > block: resync
    w.epb(c.Record(c.T0_NS, c.ethernet(specs[2].ip_packet())))
    data = w.to_bytes()
    packets, skipped = read_all(w.write(tmp_path / "a.pcapng"), reader)
    assert packets == [specs[0].expected(c.T0_NS, 0), specs[2].expected(c.T0_NS, 2)]
    assert skipped == {"corrupt_record": 1}
    bad = data + struct.pack("<II", 6, 13) + b"\x00" * 20  # block length not a multiple of 4
    (tmp_path / "b.pcapng").write_bytes(bad)
    assert read_all(tmp_path / "b.pcapng", reader)[1] == {"corrupt_record": 2}


@pytest.mark.parametrize("reader", READERS)
def test_not_a_capture_or_empty_raises_capture_format_error_naming_the_file(tmp_path: Path, reader: str) -> None:
    for name, data, message in [("empty.pcap", b"", "empty"), ("text.pcap", b"hello world, not a capture", "not a"),
                                ("empty.pcap.gz", gzip.compress(b""), "empty"),
                                ("short.pcap", struct.pack("<I", 0xA1B2C3D4) + b"\x02\x00", "truncated")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CaptureFormatError, match=name.replace(".", r"\.")) as info:
            read_all(path, reader)
        assert "\n" not in str(info.value)
        if reader != "scapy":
            assert message in str(info.value)


@pytest.mark.parametrize("reader", READERS)
def test_unsupported_pcap_link_type_names_the_number(tmp_path: Path, reader: str) -> None:
    path = c.write_pcap(tmp_path / "a.pcap", [c.Record(c.T0_NS, b"\x00" * 40)], linktype=147)
    with pytest.raises(CaptureFormatError, match="link type 147"):
        read_all(path, reader)


def test_missing_file_and_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read_all(tmp_path / "nope.pcap")
    path = c.write_pcap(tmp_path / "a.pcap", [])
    with pytest.raises(ParameterError, match="'reader' parameter"):
        read_all(path, "tshark")
    with pytest.raises(ParameterError, match="'chunk_packets' parameter must be a positive int"):
        read_all(path, "auto", 0)
    assert read_all(path) == ([], {})


@pytest.mark.parametrize("reader", READERS)
def test_batches_hold_chunk_packets_records_in_order(tmp_path: Path, reader: str) -> None:
    records, expected, skipped = c.standard_records()
    path = c.write_pcap(tmp_path / "a.pcap", records)
    batches = list(read_packets(path, reader=reader, chunk_packets=4))
    # One batch per 4 records, then one counting the fragments of datagrams never completed.
    assert len(batches) == -(-len(records) // 4) + 1
    assert len(batches[-1]) == 0 and set(batches[-1].skipped) == {"fragment_incomplete"}
    for i, batch in enumerate(batches[:-1]):
        assert all(i * 4 <= f < i * 4 + 4 for f in batch.frame_index.tolist())
        unfragmented = sum(n for reason, n in batch.skipped.items() if not reason.startswith("fragment_"))
        assert len(batch) + unfragmented <= min(4, len(records) - i * 4)
    assert sum(len(b) + sum(b.skipped.values()) for b in batches) == len(records)  # the counts add up
    assert [p for b in batches for p in b.packets()] == expected


def test_auto_batches_point_into_the_mapped_file(tmp_path: Path) -> None:
    records, expected, _ = c.standard_records()
    path = c.write_pcap(tmp_path / "a.pcap", records)
    batch, fragments_left = read_packets(path)  # the second batch: fragments never reassembled
    assert len(fragments_left) == 0
    assert batch.data.shape[0] == path.stat().st_size  # zero copy: the map of the whole file
    assert batch.data.dtype == np.uint8 and batch.ts_ns.dtype == np.int64 and batch.src_addr.shape == (len(expected), 16)


def test_capture_info(tmp_path: Path) -> None:
    pcap = c.write_pcap(tmp_path / "a.pcap", [], linktype=c.LINKTYPE_LINUX_SLL, nanosecond=True, big_endian=True,
                        snaplen=96, compress=True)
    assert capture_info(pcap) | {"path": None} == {
        "path": None, "format": "pcap", "compressed": "gzip", "byte_order": "big", "version": "2.4",
        "link_types": [113], "snaplen": 96, "ts_resolution_ns": 1}
    ng = c.write_pcapng(tmp_path / "a.pcapng", [c.Interface(1, 65535), c.Interface(276, 0, tsresol=9)], [])
    info = capture_info(ng)
    assert (info["format"], info["link_types"], info["snaplen"], info["ts_resolution"]) == (
        "pcapng", [1, 276], [65535, 0], ["1e-6 s", "1e-9 s"])


@pytest.mark.parametrize("reader", ["auto", "dpkt"])
@pytest.mark.parametrize("compress", [False, True])
def test_pcapng_windows_and_chunks_do_not_change_the_result(tmp_path: Path, tiny_windows: None, reader: str,
                                                            compress: bool) -> None:
    records, expected, skipped = c.standard_records()
    # snaplen 65535: scapy reads an SPB on an interface with snaplen 0 ("no limit") as empty.
    w = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET, snaplen=65535))
    for r in records * 3:
        w.epb(r)
    w.spb(records[0].frame).unknown()
    path = w.write(tmp_path / "a.pcapng", compress=compress)
    reference = read_all(w.write(tmp_path / "b.pcapng"), "scapy")
    assert reference[1] == {k: 3 * v for k, v in skipped.items()}
    for chunk in (1, 5, 1000):
        assert read_all(path, reader, chunk) == reference


@pytest.mark.parametrize("reader", ["auto", "dpkt"])  # scapy keeps section 1's interfaces in section 2
def test_pcapng_sections_of_both_byte_orders_and_late_interfaces(tmp_path: Path, reader: str) -> None:
    specs = c.standard_specs()
    first = c.PcapngWriter().section().interface(c.Interface(c.LINKTYPE_ETHERNET))
    first.epb(c.Record(c.T0_NS, c.ethernet(specs[0].ip_packet())))
    first.interface(c.Interface(c.LINKTYPE_RAW, tsresol=9))  # described after packets were seen
    first.epb(c.Record(c.T0_NS + 1, specs[1].ip_packet(), interface=1))
    second = c.PcapngWriter(big_endian=True).section().interface(c.Interface(c.LINKTYPE_LINUX_SLL, tsresol=9))
    second.epb(c.Record(c.T0_NS + 2, c.sll(specs[9].ip_packet())))
    path = tmp_path / "a.pcapng"
    path.write_bytes(first.to_bytes() + second.to_bytes())
    assert read_all(path, reader) == ([specs[0].expected(c.T0_NS, 0), specs[1].expected(c.T0_NS + 1, 1),
                                       specs[9].expected(c.T0_NS + 2, 2)], {})


@pytest.mark.parametrize("reader", READERS)
def test_an_archive_given_as_a_capture_is_named(tmp_path: Path, reader: str) -> None:
    import io
    import tarfile
    import zipfile

    pcap = c.pcap_bytes(c.standard_records()[0])
    archives = {}
    with zipfile.ZipFile(tmp_path / "caps.zip", "w") as z:
        z.writestr("a.pcap", pcap)
    archives["caps.zip"] = "a zip archive"
    with tarfile.open(tmp_path / "caps.tar", "w") as t:
        info = tarfile.TarInfo("a.pcap")
        info.size = len(pcap)
        t.addfile(info, io.BytesIO(pcap))
    archives["caps.tar"] = "a tar archive"
    (tmp_path / "caps.tar.gz").write_bytes(gzip.compress((tmp_path / "caps.tar").read_bytes()))
    archives["caps.tar.gz"] = "a tar archive"
    (tmp_path / "caps.7z").write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(40))
    archives["caps.7z"] = "a 7z archive"
    for name, kind in archives.items():
        if reader == "scapy" and name.endswith(".gz"):
            continue  # scapy opens gzip itself and reports the tar inside as unreadable
        with pytest.raises(CaptureFormatError) as info:
            read_all(tmp_path / name, reader)
        assert str(info.value) == f"{tmp_path / name}: {kind}, not a capture; unpack it first"


def _fast_share(batches) -> float:
    decoded = Counter()
    for batch in batches:
        decoded.update(batch.decoded_by)
    return decoded["fast"] / sum(decoded.values())


def test_fast_path_decodes_the_common_frames_itself(tmp_path: Path) -> None:
    """The auto reader's numpy path must judge >= 95% of ordinary Ethernet/IPv4/TCP frames and of
    the sample captures itself: reader equivalence tests would still pass if every frame silently
    went to dpkt."""
    specs = [c.PacketSpec("10.0.0.1", "10.0.0.2", 40000 + i % 50, 443, seq=1000 + i, payload=bytes(i % 200))
             for i in range(2000)]
    path = c.write_pcap(tmp_path / "tcp.pcap", [c.Record(c.T0_NS + i * 1000, c.ethernet(s.ip_packet()))
                                               for i, s in enumerate(specs)])
    assert _fast_share(read_packets(path, chunk_packets=512)) >= 0.95
    sample = sorted((Path(__file__).resolve().parents[2] / "sample_pcaps").glob("*.pcap"))
    assert sample, "sample_pcaps/ is part of the repository"
    for capture_path in sample[:4]:
        assert _fast_share(read_packets(capture_path)) >= 0.95, capture_path
    # The counter counts: the dpkt reader judges every frame itself.
    assert Counter(next(read_packets(path, reader="dpkt", chunk_packets=512)).decoded_by) == {"dpkt": 512}
