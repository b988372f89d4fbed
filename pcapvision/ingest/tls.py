"""TLS ClientHello parsing for flow metadata: SNI (with its byte span), offered version, JA3.

:func:`parse_client_hello` reads the initiator's reassembled byte stream of a flow, which starts
with TLS records. A ClientHello split over several handshake records (or TCP segments, once
reassembled) is joined; a ClientHello cut short (capture snap length, ``max_bytes``) or anything
that is not a TLS handshake gives ``None``. Nothing here raises on bad input.

JA3 follows https://github.com/salesforce/ja3: ``SSLVersion,Ciphers,Extensions,EllipticCurves,
EllipticCurvePointFormats``, decimal values joined by ``-``, GREASE values (RFC 8701) removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["ClientHello", "parse_client_hello", "is_grease", "version_name"]

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


def is_grease(value: int) -> bool:
    """True for the RFC 8701 GREASE values 0x0a0a, 0x1a1a, ..., 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(value: int) -> str:
    """Name of a TLS protocol version number (0x0303 -> "TLS 1.2"); hex for unknown ones."""
    return _VERSION_NAMES.get(value, f"0x{value:04x}")


class _Truncated(Exception):
    """The ClientHello is not complete in the data given."""


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


def _data_offset(handshake_offset: int, segments: list[tuple[int, int]]) -> int:
    for joined_start, data_start in reversed(segments):
        if handshake_offset >= joined_start:
            return data_start + handshake_offset - joined_start
    raise AssertionError("offset before the first fragment")  # pragma: no cover - callers pass valid offsets


class _Reader:
    """Bounds-checked big-endian reader over the handshake bytes."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int) -> int:
        start = self.pos
        if start + n > self.end:
            raise _Truncated
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.buf[self.take(1)]

    def u16(self) -> int:
        start = self.take(2)
        return (self.buf[start] << 8) | self.buf[start + 1]

    def vector(self, length_bytes: int) -> tuple[int, int]:
        """(start, end) of a vector with a 1- or 2-byte length prefix."""
        n = self.u8() if length_bytes == 1 else self.u16()
        start = self.take(n)
        return start, start + n


def _u16_list(buf: bytes, start: int, end: int) -> list[int]:
    return [(buf[i] << 8) | buf[i + 1] for i in range(start, end - 1, 2)]


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse the ClientHello at the start of a TLS record stream; ``None`` if there is none.

    ``sni_span`` indexes ``data``; when the host name straddles two records the span also covers
    the record header between its two parts.
    """
    try:
        return _parse(bytes(data))
    except (_Truncated, IndexError, ValueError):
        return None


def _parse(data: bytes) -> ClientHello | None:
    handshake, segments = _join_handshake_records(data)
    if len(handshake) < 4 or handshake[0] != _HANDSHAKE_CLIENT_HELLO:
        return None
    body_length = int.from_bytes(handshake[1:4], "big")
    if 4 + body_length > len(handshake):
        return None  # cut short: a partial ClientHello would give a wrong JA3
    r = _Reader(handshake, 4, 4 + body_length)
    client_version = r.u16()
    r.take(32)  # random
    r.vector(1)  # session id
    start, end = r.vector(2)
    ciphers = [c for c in _u16_list(handshake, start, end) if not is_grease(c)]
    r.vector(1)  # compression methods
    extensions: list[int] = []
    groups: list[int] = []
    point_formats: list[int] = []
    offered_versions: list[int] = []
    sni: str | None = None
    sni_span: tuple[int, int] | None = None
    if r.pos < r.end:  # extensions are optional (SSL 3.0 / early TLS clients)
        ext_start, ext_end = r.vector(2)
        ext = _Reader(handshake, ext_start, ext_end)
        while ext.pos < ext.end:
            ext_type = ext.u16()
            start, end = ext.vector(2)
            if is_grease(ext_type):
                continue
            extensions.append(ext_type)
            if ext_type == _EXT_SERVER_NAME and sni is None:
                sni, sni_span = _server_name(handshake, start, end, segments)
            elif ext_type == _EXT_SUPPORTED_GROUPS:
                inner = _Reader(handshake, start, end)
                g_start, g_end = inner.vector(2)
                groups = [g for g in _u16_list(handshake, g_start, g_end) if not is_grease(g)]
            elif ext_type == _EXT_EC_POINT_FORMATS:
                inner = _Reader(handshake, start, end)
                p_start, p_end = inner.vector(1)
                point_formats = list(handshake[p_start:p_end])
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                inner = _Reader(handshake, start, end)
                v_start, v_end = inner.vector(1)
                offered_versions = [v for v in _u16_list(handshake, v_start, v_end) if not is_grease(v)]
    version = max(offered_versions) if offered_versions else client_version
    ja3 = ",".join([
        str(client_version),
        "-".join(map(str, ciphers)),
        "-".join(map(str, extensions)),
        "-".join(map(str, groups)),
        "-".join(map(str, point_formats)),
    ])
    return ClientHello(
        sni=sni,
        sni_span=sni_span,
        version=version_name(version),
        ja3=ja3,
        ja3_hash=hashlib.md5(ja3.encode("ascii")).hexdigest(),
    )


def _server_name(
    handshake: bytes, start: int, end: int, segments: list[tuple[int, int]]
) -> tuple[str | None, tuple[int, int] | None]:
    """The first host_name entry of a server_name extension body, and its span in the data."""
    r = _Reader(handshake, start, end)
    list_start, list_end = r.vector(2)
    entries = _Reader(handshake, list_start, list_end)
    while entries.pos < entries.end:
        name_type = entries.u8()
        name_start, name_end = entries.vector(2)
        if name_type == 0 and name_end > name_start:
            name = handshake[name_start:name_end].decode("ascii", errors="replace")
            span = (_data_offset(name_start, segments), _data_offset(name_end - 1, segments) + 1)
            return name, span
    return None, None
