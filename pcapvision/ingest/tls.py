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

import numpy as np

from pcapvision.ingest.jit import compiled, compiled_inline

__all__ = ["ClientHello", "parse_client_hello", "client_hello_metadata", "client_hello_metadata_many", "is_grease",
           "version_name"]

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


# --- many ClientHellos at once (flow emission) ---------------------------------------------------

# Per-row results of _locate_fields: status, then [start, end) spans in the buffer (-1: none).
_FAST, _NONE, _SLOW = 1, 0, -1
_VERSION, _CIPHERS, _GROUPS, _POINT_FORMATS, _VERSIONS, _SNI, _EXTENSIONS = 0, 1, 3, 5, 7, 9, 11
_FIELDS = 13


def client_hello_metadata_many(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple | None]:
    """:func:`client_hello_metadata` of each ``buffer[starts[i]:ends[i]]``, the same results.

    A compiled pass walks the hellos whose first TLS record holds the whole handshake message
    (nearly all) and notes where the JA3 fields and the host name lie; Python only slices those
    (the fingerprint is cached on them, as in :func:`client_hello_metadata`). Other streams (a hello
    split over records, anything unusual) go to :func:`client_hello_metadata` itself.
    """
    n = starts.shape[0]
    status = np.zeros(n, np.int8)
    fields = np.zeros((n, _FIELDS), np.int64)
    extension_types = np.zeros(int(((ends - starts) // 4 + 1).sum()) if n else 0, np.int64)
    _locate_fields(buffer, starts.astype(np.int64), ends.astype(np.int64), status, fields, extension_types)
    def span(row: list[int], k: int) -> bytes:
        return buffer[row[k] : row[k + 1]].tobytes()

    out: list[tuple | None] = []
    for i, (state, row) in enumerate(zip(status.tolist(), fields.tolist())):
        if state == _NONE:
            out.append(None)
        elif state == _SLOW:
            out.append(client_hello_metadata(buffer[starts[i] : ends[i]].tobytes()))
        else:
            sni = span(row, _SNI).decode("ascii", errors="replace") if row[_SNI] >= 0 else None
            extensions = tuple(extension_types[row[_EXTENSIONS] : row[_EXTENSIONS + 1]].tolist())
            out.append((sni, *_fingerprint(row[_VERSION], span(row, _CIPHERS), extensions, span(row, _GROUPS),
                                           span(row, _POINT_FORMATS), span(row, _VERSIONS))))
    return out


@compiled_inline
def _be16(buf, at):  # pragma: no cover - compiled
    return (np.int64(buf[at]) << 8) | np.int64(buf[at + 1])


@compiled
def _locate_fields(buf, starts, ends, status, fields, extension_types):  # pragma: no cover - compiled
    """The walk of :func:`_parse` over each stream whose first record holds the whole handshake
    message: same bounds checks, each failing one giving _NONE; other streams _SLOW."""
    n_types = 0
    for i in range(starts.shape[0]):
        start, stop = starts[i], ends[i]
        status[i] = _SLOW
        if stop - start < 5 or buf[start] != _RECORD_HANDSHAKE or buf[start + 1] != 3:
            continue
        length = _be16(buf, start + 3)
        hs = start + 5  # the handshake message: buf[hs : hs_stop]
        hs_stop = min(hs + length, stop)
        if not (0 < length <= _MAX_RECORD_LENGTH and hs_stop - hs >= 4):
            continue
        end = hs + 4 + ((np.int64(buf[hs + 1]) << 16) | _be16(buf, hs + 2))
        if end > hs_stop:  # not all in the first record: joined by the Python parser
            continue
        status[i] = _NONE
        if buf[hs] != _HANDSHAKE_CLIENT_HELLO or end < hs + 4 + 2 + 32 + 1:
            continue
        pos = hs + 4 + 2 + 32 + 1 + np.int64(buf[hs + 4 + 2 + 32])  # after the session id
        if pos + 2 > end:
            continue
        ciphers_at, pos = pos + 2, pos + 2 + _be16(buf, pos)
        if pos > end or pos + 1 > end:
            continue
        ciphers_end = pos
        pos += 1 + np.int64(buf[pos])  # compression methods
        if pos > end:
            continue
        first_type = n_types
        groups = (0, 0)
        point_formats = (0, 0)
        versions = (0, 0)
        sni = (-1, -1)
        sni_seen = False
        ok = True
        if pos < end:  # extensions are optional
            if pos + 2 > end or pos + 2 + _be16(buf, pos) > end:
                continue
            ext_end = pos + 2 + _be16(buf, pos)
            pos += 2
            while pos < ext_end:
                if pos + 4 > ext_end:
                    ok = False
                    break
                ext_type, size = _be16(buf, pos), _be16(buf, pos + 2)
                body, pos = pos + 4, pos + 4 + size
                if pos > ext_end:
                    ok = False
                    break
                extension_types[n_types] = ext_type
                n_types += 1
                if ext_type == _EXT_SERVER_NAME:
                    if not sni_seen:
                        # the first host_name entry of the server_name list (a list cut short: none)
                        if body + 2 > pos or body + 2 + _be16(buf, body) > pos:
                            ok = False
                            break
                        at, list_end = body + 2, body + 2 + _be16(buf, body)
                        while at < list_end:
                            name_type = buf[at]
                            if at + 3 > list_end or at + 3 + _be16(buf, at + 1) > list_end:
                                ok = False
                                break
                            name_start, at = at + 3, at + 3 + _be16(buf, at + 1)
                            if name_type == 0 and at > name_start:
                                sni = (name_start, at)
                                sni_seen = True
                                break
                        if not ok:
                            break
                elif ext_type == _EXT_SUPPORTED_GROUPS:
                    if body + 2 > pos or body + 2 + _be16(buf, body) > pos:
                        ok = False
                        break
                    groups = (body + 2, body + 2 + _be16(buf, body))
                elif ext_type == _EXT_EC_POINT_FORMATS or ext_type == _EXT_SUPPORTED_VERSIONS:
                    if body + 1 > pos or body + 1 + np.int64(buf[body]) > pos:
                        ok = False
                        break
                    span = (body + 1, body + 1 + np.int64(buf[body]))
                    if ext_type == _EXT_EC_POINT_FORMATS:
                        point_formats = span
                    else:
                        versions = span
        if not ok:
            n_types = first_type
            continue
        status[i] = _FAST
        row = fields[i]
        row[_VERSION] = _be16(buf, hs + 4)
        row[_CIPHERS], row[_CIPHERS + 1] = ciphers_at, ciphers_end
        row[_GROUPS], row[_GROUPS + 1] = groups
        row[_POINT_FORMATS], row[_POINT_FORMATS + 1] = point_formats
        row[_VERSIONS], row[_VERSIONS + 1] = versions
        row[_SNI], row[_SNI + 1] = sni
        row[_EXTENSIONS], row[_EXTENSIONS + 1] = first_type, n_types
