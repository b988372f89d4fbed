"""Zero the TLS server names (SNI) and certificate names inside payload bytes.

With names gone, a model that still separates classes must be using behaviour (sizes, record
structure, ciphertext statistics) rather than reading host names. Three sources of positions:

1. the ``server_name`` span of a ClientHello at the start of the bytes
   (:func:`pcapvision.ingest.tls.parse_client_hello`);
2. a scan for X.509 name fields in DER: every commonName attribute value (OID 2.5.4.3, subject
   and issuer) and every subjectAltName dNSName / iPAddress entry. The scan reads the DER
   patterns directly, so it also finds names in a certificate cut short by the flow's
   ``max_bytes`` (``cryptography`` can only load complete certificates);
3. every further occurrence, case-insensitive, of each name found above and of the flow's
   ``tls_sni`` (names shorter than 4 bytes are only zeroed where parsed, not searched, so that an
   issuer such as ``R3`` does not blank random bytes).

Certificates are in clear text only up to TLS 1.2; in TLS 1.3 they travel encrypted, so only the
SNI can be found (and with Encrypted Client Hello not even that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcapvision.imaging.representations import binary_parts

log = logging.getLogger(__name__)

_OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"
_OID_SUBJECT_ALT_NAME = b"\x06\x03\x55\x1d\x11"
# DER string types a commonName may use: UTF8, Printable, Teletex, IA5, Universal, BMP.
_STRING_TAGS = frozenset({0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E})
_SAN_DNS_NAME = 0x82  # [2] IMPLICIT IA5String
_SAN_IP_ADDRESS = 0x87  # [7] IMPLICIT OCTET STRING
_MIN_SEARCH_LENGTH = 4
_TLS_HANDSHAKE = 0x16


@dataclass
class MaskingStats:
    """What :func:`mask_tls_names` did."""

    flows_checked: int = 0  # flows that looked like TLS (SNI known or a handshake record first)
    flows_masked: int = 0  # flows with at least one byte zeroed
    bytes_zeroed: int = 0
    sni_names: int = 0  # flows whose SNI was found and zeroed
    certificate_names: int = 0  # distinct certificate names found, summed over flows
    examples: list[str] = field(default_factory=list)  # a few names that were zeroed

    def to_dict(self) -> dict[str, object]:
        return {
            "flows_checked": self.flows_checked,
            "flows_masked": self.flows_masked,
            "bytes_zeroed": self.bytes_zeroed,
            "flows_with_sni_masked": self.sni_names,
            "certificate_names_found": self.certificate_names,
            "example_names": self.examples,
        }

    def add(self, other: MaskingStats) -> None:
        self.flows_checked += other.flows_checked
        self.flows_masked += other.flows_masked
        self.bytes_zeroed += other.bytes_zeroed
        self.sni_names += other.sni_names
        self.certificate_names += other.certificate_names
        self.examples.extend(n for n in other.examples if n not in self.examples)
        del self.examples[5:]


def _der_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """(length, position after the length octets) of the DER length at ``pos``; None if malformed."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 3 or pos + 1 + count > len(data):
        return None
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def certificate_name_spans(data: bytes) -> list[tuple[int, int]]:
    """Spans ``[start, end)`` of X.509 commonName values and subjectAltName DNS/IP entries in ``data``.

    A span that runs past the end of ``data`` (a certificate cut short) is clipped to it.
    """
    spans: list[tuple[int, int]] = []
    pos = data.find(_OID_COMMON_NAME)
    while pos >= 0:
        tag_pos = pos + len(_OID_COMMON_NAME)
        if tag_pos < len(data) and data[tag_pos] in _STRING_TAGS:
            parsed = _der_length(data, tag_pos + 1)
            if parsed is not None and parsed[0] > 0:
                length, start = parsed
                spans.append((start, min(start + length, len(data))))
        pos = data.find(_OID_COMMON_NAME, pos + 1)
    pos = data.find(_OID_SUBJECT_ALT_NAME)
    while pos >= 0:
        spans.extend(_san_entries(data, pos + len(_OID_SUBJECT_ALT_NAME)))
        pos = data.find(_OID_SUBJECT_ALT_NAME, pos + 1)
    return spans


def _san_entries(data: bytes, pos: int) -> list[tuple[int, int]]:
    # extnValue: [critical BOOLEAN] OCTET STRING { SEQUENCE OF GeneralName }
    if data[pos : pos + 3] == b"\x01\x01\xff":
        pos += 3
    if pos >= len(data) or data[pos] != 0x04:
        return []
    parsed = _der_length(data, pos + 1)
    if parsed is None or parsed[1] >= len(data) or data[parsed[1]] != 0x30:
        return []
    parsed = _der_length(data, parsed[1] + 1)
    if parsed is None:
        return []
    seq_length, pos = parsed
    end = min(pos + seq_length, len(data))
    spans = []
    while pos < end:
        tag = data[pos]
        entry = _der_length(data, pos + 1)
        if entry is None:
            break
        length, start = entry
        if tag in (_SAN_DNS_NAME, _SAN_IP_ADDRESS) and length > 0:
            spans.append((start, min(start + length, len(data))))
        pos = start + length
    return spans


def _occurrences(haystack_lower: bytes, needle: bytes) -> list[tuple[int, int]]:
    needle = needle.lower()
    spans = []
    pos = haystack_lower.find(needle)
    while pos >= 0:
        spans.append((pos, pos + len(needle)))
        pos = haystack_lower.find(needle, pos + 1)
    return spans


def _sni_span(data: bytes) -> tuple[int, int] | None:
    try:
        from pcapvision.ingest import parse_client_hello
    except ImportError:  # the ingest stage is optional for imaging; tls_sni search still applies
        return None
    hello = parse_client_hello(data)
    return hello.sni_span if hello is not None else None


def name_spans(data: bytes, *, sni: str | None = None, other_streams: tuple[bytes, ...] = ()) -> tuple[list[tuple[int, int]], set[bytes], bool]:
    """Every span of ``data`` holding a TLS server or certificate name.

    ``other_streams`` (e.g. the server's direction alone) are scanned for certificate names too,
    which are then searched for in ``data``. Returns the spans, the names found, and whether the
    SNI was located.
    """
    spans: list[tuple[int, int]] = []
    names: set[bytes] = set()
    sni_found = False
    hello_span = _sni_span(data)
    if hello_span is not None:
        spans.append(hello_span)
        names.add(data[hello_span[0] : hello_span[1]])
        sni_found = True
    for stream in (data, *other_streams):
        for start, end in certificate_name_spans(stream):
            if stream is data:
                spans.append((start, end))
            names.add(stream[start:end])
    lowered = data.lower()
    searched = set(names)
    if sni:
        searched.add(sni.encode("ascii", "replace"))
    for name in searched:
        if len(name) >= _MIN_SEARCH_LENGTH:
            found = _occurrences(lowered, name)
            spans.extend(found)
            if sni and name == sni.encode("ascii", "replace") and found:
                sni_found = True
    return spans, names, sni_found


def mask_tls_names(flows: pa.Table | pa.RecordBatch, column: str) -> tuple[pa.Array, MaskingStats]:
    """``flows[column]`` with every TLS server/certificate name byte set to 0, and what was done.

    Reads ``tls_sni`` and ``dst2src_payload`` when the table has them. Only flows that look like
    TLS (an SNI, or a handshake record at the start of either payload column) are examined.
    """
    arr = flows.column(column)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    data, starts, lengths = binary_parts(arr)
    first_byte = np.full(len(starts), -1, dtype=np.int16)
    nonempty = lengths > 0
    first_byte[nonempty] = data[starts[nonempty]]
    candidates = first_byte == _TLS_HANDSHAKE
    sni_values: list[str | None] = [None] * len(starts)
    if "tls_sni" in flows.schema.names:
        sni_col = flows.column("tls_sni")
        sni_values = sni_col.to_pylist()
        candidates |= ~np.asarray(pc.is_null(sni_col).to_numpy(zero_copy_only=False))
    server: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if "dst2src_payload" in flows.schema.names and column != "dst2src_payload":
        server_arr = flows.column("dst2src_payload")
        if isinstance(server_arr, pa.ChunkedArray):
            server_arr = server_arr.combine_chunks()
        server = binary_parts(server_arr)
        s_data, s_starts, s_lengths = server
        s_first = np.full(len(s_starts), -1, dtype=np.int16)
        s_nonempty = s_lengths > 0
        s_first[s_nonempty] = s_data[s_starts[s_nonempty]]
        candidates |= s_first == _TLS_HANDSHAKE
    stats = MaskingStats()
    masked = data.copy()
    for i in np.flatnonzero(candidates & nonempty):
        stats.flows_checked += 1
        start, length = int(starts[i]), int(lengths[i])
        value = data[start : start + length].tobytes()
        others: tuple[bytes, ...] = ()
        if server is not None and server[2][i] > 0:
            others = (server[0][server[1][i] : server[1][i] + server[2][i]].tobytes(),)
        spans, names, sni_found = name_spans(value, sni=sni_values[i], other_streams=others)
        if not spans:
            continue
        row = masked[start : start + length]
        before = int(np.count_nonzero(row))
        for a, b in spans:
            row[a:b] = 0
        stats.bytes_zeroed += before - int(np.count_nonzero(row))
        stats.flows_masked += 1
        stats.sni_names += int(sni_found)
        stats.certificate_names += len(names - {(sni_values[i] or "").encode("ascii", "replace")})
        if len(stats.examples) < 5:
            stats.examples.extend(
                n.decode("ascii", "replace") for n in sorted(names) if n.decode("ascii", "replace") not in stats.examples
            )
            del stats.examples[5:]
    buffers = arr.buffers()
    out = pa.Array.from_buffers(arr.type, len(arr), [buffers[0], buffers[1], pa.py_buffer(masked)],
                                null_count=arr.null_count, offset=arr.offset)
    return out, stats
