"""TLS ClientHello parsing for flow metadata: SNI (with its byte span), offered version, JA3.

:func:`parse_client_hello` reads the initiator's reassembled byte stream of a flow, which starts
with TLS records. A ClientHello split over several handshake records (or TCP segments, once
reassembled) is joined; a ClientHello cut short (capture snap length, ``max_bytes``) or anything
that is not a TLS handshake gives ``None``. Nothing here raises on bad input.

JA3 follows https://github.com/salesforce/ja3: ``SSLVersion,Ciphers,Extensions,EllipticCurves,
EllipticCurvePointFormats``, decimal values joined by ``-``, GREASE values (RFC 8701) removed.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from struct import unpack_from

__all__ = ["ClientHello", "parse_client_hello", "client_hello_metadata", "is_grease", "version_name"]

_RECORD_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_SUPPORTED_GROUPS = 10
_EXT_EC_POINT_FORMATS = 11
_EXT_SUPPORTED_VERSIONS = 43
_MAX_RECORD_LENGTH = (1 << 14) + 2048  # TLSCiphertext limit; larger lengths mean "not TLS"

_VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}


@dataclass(frozen=True)
class ClientHello:
    """What a flow keeps of a TLS ClientHello."""

    sni: str | None  # host name of the server_name extension (decoded as ASCII, errors replaced)
    sni_span: tuple[int, int] | None  # [start, end) of the host-name bytes within the parsed data
    version: str  # highest version offered: "TLS 1.3", "TLS 1.2", ... or "0x7f1c" when unnamed
    ja3: str
    ja3_hash: str  # MD5 hex of ``ja3``


_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    """True for the RFC 8701 GREASE values 0x0a0a, 0x1a1a, ..., 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(value: int) -> str:
    """Name of a TLS protocol version number (0x0303 -> "TLS 1.2"); hex for unknown ones."""
    return _VERSION_NAMES.get(value, f"0x{value:04x}")


def _join_handshake_records(data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Concatenate the fragments of the leading handshake records.

    Returns the handshake bytes and, per fragment, (offset in handshake bytes, offset in ``data``),
    to map positions back into ``data``. Stops at the first non-handshake record or at the end of
    ``data`` (the last fragment may be partial).
    """
    pieces: list[bytes] = []
    segments: list[tuple[int, int]] = []
    pos = 0
    joined = 0
    while pos + 5 <= len(data):
        if data[pos] != _RECORD_HANDSHAKE or data[pos + 1] != 3:
            break
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > _MAX_RECORD_LENGTH:
            break
        fragment = data[pos + 5 : pos + 5 + length]
        segments.append((joined, pos + 5))
        pieces.append(fragment)
        joined += len(fragment)
        pos += 5 + length
    return b"".join(pieces), segments


def _handshake_bytes(data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """:func:`_join_handshake_records`, short-cut when the first record holds the whole handshake
    message (the usual case): the records after it cannot change what is parsed."""
    if data[:2] == b"\x16\x03":
        length = int.from_bytes(data[3:5], "big")
        first = data[5 : 5 + length]
        if (0 < length <= _MAX_RECORD_LENGTH and len(first) >= 4
                and 4 + int.from_bytes(first[1:4], "big") <= len(first)):
            return first, [(0, 5)]
    return _join_handshake_records(data)


def _data_offset(handshake_offset: int, segments: list[tuple[int, int]]) -> int:
    for joined_start, data_start in reversed(segments):
        if handshake_offset >= joined_start:
            return data_start + handshake_offset - joined_start
    raise AssertionError("offset before the first fragment")  # pragma: no cover - callers pass valid offsets


class _Malformed(Exception):
    """A length field points outside its container."""


def _vector(buf: bytes, pos: int, length_bytes: int, limit: int) -> tuple[int, int]:
    """(start, end) of the vector at ``pos`` with a 1- or 2-byte length prefix, within ``limit``."""
    if pos + length_bytes > limit:
        raise _Malformed
    if length_bytes == 1:
        start, n = pos + 1, buf[pos]
    else:
        start, n = pos + 2, (buf[pos] << 8) | buf[pos + 1]
    if start + n > limit:
        raise _Malformed
    return start, start + n


def _u16s(buf: bytes, start: int, end: int) -> tuple[int, ...]:
    return unpack_from(f"!{(end - start) // 2}H", buf, start)


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse the ClientHello at the start of a TLS record stream; ``None`` if there is none.

    ``sni_span`` indexes ``data``; when the host name straddles two records the span also covers
    the record header between its two parts.
    """
    fields = _parse_fields(data)
    return None if fields is None else ClientHello(*fields)


def client_hello_metadata(data: bytes) -> tuple[str | None, str, str, str] | None:
    """``(sni, version, ja3, ja3_hash)`` of :func:`parse_client_hello`, without building a
    :class:`ClientHello` (the flow assembler calls this once per TLS flow)."""
    fields = _parse_fields(data)
    return None if fields is None else (fields[0], *fields[2:])


def _parse_fields(data: bytes) -> tuple[str | None, tuple[int, int] | None, str, str, str] | None:
    try:
        return _parse(bytes(data))
    except (_Malformed, IndexError, ValueError, struct.error):
        return None


def _parse(data: bytes) -> tuple[str | None, tuple[int, int] | None, str, str, str] | None:
    # The per-flow hot path of flow emission. The walk only checks bounds and notes where the
    # JA3 fields lie; turning them into the JA3 string and its MD5 is cached on their raw bytes,
    # as clients repeat a handful of fingerprints across thousands of flows.
    hs, segments = _handshake_bytes(data)
    if len(hs) < 4 or hs[0] != _HANDSHAKE_CLIENT_HELLO:
        return None
    end = 4 + int.from_bytes(hs[1:4], "big")
    if end > len(hs):
        return None  # cut short: a partial ClientHello would give a wrong JA3
    if end < 4 + 2 + 32 + 1:
        return None
    # Each length-prefixed vector is bounds-checked inline, as _vector does.
    pos = 4 + 2 + 32 + 1 + hs[4 + 2 + 32]  # after the session id
    if pos + 2 > end:
        return None
    ciphers_at, pos = pos + 2, pos + 2 + ((hs[pos] << 8) | hs[pos + 1])
    if pos > end:
        return None
    ciphers = hs[ciphers_at:pos]
    if pos + 1 > end:
        return None
    pos += 1 + hs[pos]  # compression methods
    if pos > end:
        return None
    extensions: list[int] = []
    groups = point_formats = versions = b""
    sni: str | None = None
    sni_span: tuple[int, int] | None = None
    if pos < end:  # extensions are optional (SSL 3.0 / early TLS clients)
        pos, ext_end = _vector(hs, pos, 2, end)
        while pos < ext_end:
            if pos + 4 > ext_end:
                return None
            ext_type, n = unpack_from("!HH", hs, pos)
            start, pos = pos + 4, pos + 4 + n
            if pos > ext_end:
                return None
            extensions.append(ext_type)
            if ext_type == _EXT_SERVER_NAME:
                if sni is None:
                    sni, sni_span = _server_name(hs, start, pos, segments)
            elif ext_type == _EXT_SUPPORTED_GROUPS:
                g_start, g_end = _vector(hs, start, 2, pos)
                groups = hs[g_start:g_end]
            elif ext_type == _EXT_EC_POINT_FORMATS:
                p_start, p_end = _vector(hs, start, 1, pos)
                point_formats = hs[p_start:p_end]
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                v_start, v_end = _vector(hs, start, 1, pos)
                versions = hs[v_start:v_end]
    client_version = (hs[4] << 8) | hs[5]
    return (sni, sni_span,
            *_fingerprint(client_version, ciphers, tuple(extensions), groups, point_formats, versions))


@functools.lru_cache(maxsize=4096)
def _fingerprint(client_version: int, ciphers: bytes, extensions: tuple[int, ...], groups: bytes,
                 point_formats: bytes, versions: bytes) -> tuple[str, str, str]:
    """(version name, JA3, JA3 MD5) from the raw fields of a ClientHello; GREASE values removed."""
    offered = [v for v in _u16s(versions, 0, len(versions)) if v not in _GREASE]
    ja3 = ",".join([
        str(client_version),
        "-".join([str(c) for c in _u16s(ciphers, 0, len(ciphers)) if c not in _GREASE]),
        "-".join([str(e) for e in extensions if e not in _GREASE]),
        "-".join([str(g) for g in _u16s(groups, 0, len(groups)) if g not in _GREASE]),
        "-".join(map(str, point_formats)),
    ])
    version = max(offered) if offered else client_version
    return version_name(version), ja3, hashlib.md5(ja3.encode("ascii"), usedforsecurity=False).hexdigest()


def _server_name(
    hs: bytes, start: int, end: int, segments: list[tuple[int, int]]
) -> tuple[str | None, tuple[int, int] | None]:
    """The first host_name entry of a server_name extension body, and its span in the data."""
    pos, list_end = _vector(hs, start, 2, end)
    while pos < list_end:
        name_type = hs[pos]
        name_start, pos = _vector(hs, pos + 1, 2, list_end)
        if name_type == 0 and pos > name_start:
            name = hs[name_start:pos].decode("ascii", errors="replace")
            return name, (_data_offset(name_start, segments), _data_offset(pos - 1, segments) + 1)
    return None, None
