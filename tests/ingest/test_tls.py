"""TLS ClientHello parsing: JA3 against the published salesforce/ja3 examples, SNI spans, robustness."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapvision.ingest.tls import ClientHello, is_grease, parse_client_hello, version_name

# The example of the salesforce/ja3 README (https://github.com/salesforce/ja3#how-it-works).
JA3_README_STRING = "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
JA3_README_HASH = "ada70206e40642a3e4461f35503241d5"
JA3_README_NO_EXT_STRING = "769,4-5-10-9-100-98-3-6-19-18-99,,,"
JA3_README_NO_EXT_HASH = "de350869b8c85de67a350c8d186f11e6"


def _vec(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def ext_server_name(name: bytes) -> tuple[int, bytes]:
    return 0, _vec(b"\x00" + _vec(name, 2), 2)


def ext_groups(groups: list[int]) -> tuple[int, bytes]:
    return 10, _vec(b"".join(struct.pack("!H", g) for g in groups), 2)


def ext_point_formats(formats: list[int]) -> tuple[int, bytes]:
    return 11, _vec(bytes(formats), 1)


def ext_supported_versions(versions: list[int]) -> tuple[int, bytes]:
    return 43, _vec(b"".join(struct.pack("!H", v) for v in versions), 1)


def client_hello_message(
    version: int, ciphers: list[int], extensions: list[tuple[int, bytes]] | None, session_id: bytes = b""
) -> bytes:
    """A handshake message (type 1) holding a ClientHello; ``extensions=None`` omits the block."""
    body = struct.pack("!H", version) + bytes(range(32)) + _vec(session_id, 1)
    body += _vec(b"".join(struct.pack("!H", c) for c in ciphers), 2) + _vec(b"\x00", 1)
    if extensions is not None:
        body += _vec(b"".join(struct.pack("!H", t) + _vec(d, 2) for t, d in extensions), 2)
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message: bytes, split_at: list[int] | None = None, record_version: int = 0x0301) -> bytes:
    """Wrap a handshake message in TLS records, cutting it at the offsets ``split_at``."""
    cuts = [0, *(split_at or []), len(message)]
    return b"".join(
        b"\x16" + struct.pack("!HH", record_version, b - a) + message[a:b] for a, b in zip(cuts, cuts[1:])
    )


def readme_hello(grease: bool = False) -> bytes:
    """The ClientHello of the README example (optionally with GREASE values sprinkled in)."""
    ciphers = [47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4]
    exts = [ext_server_name(b"www.example.com"), ext_groups([23, 24, 25]), ext_point_formats([0])]
    if grease:
        ciphers = [0x0A0A, *ciphers]
        exts = [(0x1A1A, b""), *exts[:1], ext_groups([0x2A2A, 23, 24, 25]), exts[2], (0xFAFA, b"\x00")]
    return client_hello_message(0x0301, ciphers, exts)


def test_ja3_matches_the_published_readme_example() -> None:
    hello = parse_client_hello(records(readme_hello()))
    assert hello is not None
    assert hello.ja3 == JA3_README_STRING
    assert hello.ja3_hash == JA3_README_HASH
    assert hello.version == "TLS 1.0"
    assert hello.sni == "www.example.com"


def test_ja3_removes_grease_values() -> None:
    hello = parse_client_hello(records(readme_hello(grease=True)))
    assert hello is not None
    assert hello.ja3 == JA3_README_STRING
    assert hello.ja3_hash == JA3_README_HASH


def test_ja3_without_extensions_matches_the_published_example() -> None:
    message = client_hello_message(0x0301, [4, 5, 10, 9, 100, 98, 3, 6, 19, 18, 99], None)
    hello = parse_client_hello(records(message))
    assert hello is not None
    assert (hello.ja3, hello.ja3_hash) == (JA3_README_NO_EXT_STRING, JA3_README_NO_EXT_HASH)
    assert hello.sni is None and hello.sni_span is None


def test_sni_span_points_at_the_host_name_bytes() -> None:
    data = records(readme_hello())
    hello = parse_client_hello(data)
    assert hello is not None and hello.sni_span is not None
    start, end = hello.sni_span
    assert data[start:end] == b"www.example.com"


def test_client_hello_split_over_records_is_joined_and_span_maps_into_data() -> None:
    message = readme_hello()
    name_at = message.index(b"www.example.com")
    # Cut twice: once before the extensions and once in the middle of the host name.
    data = records(message, split_at=[20, name_at + 5])
    hello = parse_client_hello(data)
    assert hello is not None
    assert hello.ja3_hash == JA3_README_HASH
    assert hello.sni == "www.example.com"
    start, end = hello.sni_span
    # The name straddles a record header: the span covers both parts and the 5 bytes between.
    assert end - start == len("www.example.com") + 5
    assert data[start:start + 5] == b"www.e"
    assert data[end - 10:end] == b"xample.com"


def test_tls13_is_reported_from_supported_versions() -> None:
    exts = [ext_server_name(b"a.test"), ext_supported_versions([0x3A3A, 0x0304, 0x0303]), ext_groups([29])]
    hello = parse_client_hello(records(client_hello_message(0x0303, [0x1301, 0x1302], exts)))
    assert hello is not None
    assert hello.version == "TLS 1.3"
    assert hello.ja3 == "771,4865-4866,0-43-10,29,"


@pytest.mark.parametrize(
    ("client_version", "name"), [(0x0303, "TLS 1.2"), (0x0302, "TLS 1.1"), (0x0300, "SSL 3.0")]
)
def test_version_from_client_version_without_supported_versions(client_version: int, name: str) -> None:
    hello = parse_client_hello(records(client_hello_message(client_version, [47], [])))
    assert hello is not None and hello.version == name


def test_truncated_or_foreign_data_gives_none() -> None:
    data = records(readme_hello())
    for cut in (0, 3, 5, 9, 50, len(data) - 1):
        assert parse_client_hello(data[:cut]) is None
    assert parse_client_hello(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n") is None
    server_hello = b"\x02" + readme_hello()[1:]
    assert parse_client_hello(records(server_hello)) is None


def test_data_after_the_client_hello_is_ignored() -> None:
    data = records(readme_hello()) + b"\x17\x03\x03\x00\x05hello"
    hello = parse_client_hello(data)
    assert hello is not None and hello.ja3_hash == JA3_README_HASH


def test_grease_and_version_helpers() -> None:
    greases = [v for v in range(1 << 16) if is_grease(v)]
    assert greases == [0x0A0A + 0x1010 * i for i in range(16)]
    assert version_name(0x0303) == "TLS 1.2"
    assert version_name(0x7F1C) == "0x7f1c"


def test_client_hello_is_frozen() -> None:
    hello = parse_client_hello(records(readme_hello()))
    assert isinstance(hello, ClientHello)
    with pytest.raises(AttributeError):
        hello.sni = "other"  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_never_raises_on_garbage(noise: bytes, cut: int) -> None:
    assert parse_client_hello(noise) is None or isinstance(parse_client_hello(noise), ClientHello)
    # Corrupt a valid hello: flip bytes at random positions, then truncate.
    data = bytearray(records(readme_hello(grease=True)))
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(noise).digest()[:4], "big"))
    for pos in rng.integers(0, len(data), size=3):
        data[pos] ^= int(rng.integers(1, 256))
    result = parse_client_hello(bytes(data[: cut or None]))
    assert result is None or isinstance(result, ClientHello)


def _mutations(rng: np.random.Generator, hello: bytes, count: int) -> list[bytes]:
    """``hello`` with bytes flipped, cut short, lengths inflated, or split over records."""
    out = []
    for _ in range(count):
        data = bytearray(hello)
        kind = rng.integers(5)
        if kind == 0:
            for at in rng.integers(0, len(data), rng.integers(1, 4)):
                data[at] = rng.integers(256)
        elif kind == 1:
            del data[rng.integers(1, len(data)):]
        elif kind == 2 and len(data) > 60:
            at = rng.integers(40, len(data) - 2)
            data[at] = 0xFF
        elif kind == 3:
            data = bytearray(records(bytes(hello[5:]), split_at=[int(rng.integers(1, len(hello) - 6))]))
        out.append(bytes(data))
    return out


def test_many_hellos_at_once_equal_one_at_a_time() -> None:
    # The compiled walk of client_hello_metadata_many against the Python parser, as the oracle, on
    # well-formed, GREASEd, split, truncated and corrupted hellos (most corrupt ones must give None
    # the same way).
    from pcapvision.ingest.tls import client_hello_metadata, client_hello_metadata_many

    rng = np.random.default_rng(0)
    plain, grease = records(readme_hello()), records(readme_hello(grease=True))
    streams = [plain, grease, readme_hello(), b"", b"\x16", b"\x17\x03\x03\x00\x05hello"]
    two_names = [(0, _vec(b"\x01" + _vec(b"not-a-host", 2), 2)), ext_server_name(b"b.example"), ext_groups([29])]
    streams += [records(client_hello_message(0x0303, [0x1301], two_names)),
                records(client_hello_message(0x0301, [4, 5], None))]
    streams += _mutations(rng, plain, 400) + _mutations(rng, grease, 400)
    buffer = np.frombuffer(b"".join(streams), np.uint8)
    ends = np.cumsum([len(s) for s in streams])
    starts = ends - np.array([len(s) for s in streams])
    got = client_hello_metadata_many(buffer, starts, ends)
    assert got == [client_hello_metadata(s) for s in streams]
    assert sum(g is not None for g in got) > 100 and sum(g is None for g in got) > 100
