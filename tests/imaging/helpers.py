"""Flows tables built directly from the contract columns (docs/contracts.md), for imaging tests."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from pcapvision.ingest import FLOWS_SCHEMA


def make_flow(i: int = 0, **fields: Any) -> dict[str, Any]:
    """One flow row with plausible defaults; ``fields`` override. ``packets`` is a shortcut:
    a list of ``(time_ms, direction, payload_bytes)``; IP bytes are payload + 40."""
    packets = fields.pop("packets", [(0.0, 0, 10), (1.0, 1, 20)])
    payload = fields.get("payload", bytes([i % 256]) * 10)
    row: dict[str, Any] = {
        "flow_id": f"{i:016x}",
        "community_id": "1:test",
        "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.2",
        "src_port": 40000 + i % 1000,
        "dst_port": 443,
        "protocol": 6,
        "ip_version": 4,
        "first_seen_ns": 1_700_000_000_000_000_000,
        "last_seen_ns": 1_700_000_000_100_000_000,
        "duration_ms": 100.0,
        "src2dst_packets": 1,
        "dst2src_packets": 1,
        "bidirectional_packets": 2,
        "src2dst_bytes": 50,
        "dst2src_bytes": 60,
        "bidirectional_bytes": 110,
        "src2dst_payload_bytes": 10,
        "dst2src_payload_bytes": 20,
        "payload": payload,
        "src2dst_payload": payload,
        "dst2src_payload": b"",
        "packet_time_ms": [p[0] for p in packets],
        "packet_direction": [p[1] for p in packets],
        "packet_payload_bytes": [p[2] for p in packets],
        "packet_ip_bytes": [p[2] + 40 for p in packets],
        "packet_tcp_flags": [0x18 for _ in packets],
        "tls_sni": None,
        "tls_version": None,
        "tls_ja3": None,
        "tls_ja3_hash": None,
        "end_reason": "fin",
        "source_file": "capture-a.pcap",
        "source_sha256": hashlib.sha256(b"capture-a").hexdigest(),
        "label": "normal",
        "family": "web",
        "label_source": "--label",
    }
    row.update(fields)
    return row


def make_flows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A flows table with the contract's columns and types from complete row dicts (see make_flow)."""
    return pa.Table.from_pylist(rows, schema=FLOWS_SCHEMA)  # the contract itself: no drift from ingest


# --- TLS messages (for name masking) -------------------------------------------------------------


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def tls_record(handshake: bytes, version: bytes = b"\x03\x03") -> bytes:
    return b"\x16" + version + _u16(len(handshake)) + handshake


def client_hello(sni: str) -> bytes:
    """A minimal TLS 1.2 ClientHello record carrying ``sni`` in a server_name extension."""
    name = sni.encode("ascii")
    server_name = _u16(len(name) + 3) + b"\x00" + _u16(len(name)) + name
    extensions = _u16(0) + _u16(len(server_name)) + server_name
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + _u16(4) + b"\xc0\x2f\x00\x9c" + b"\x01\x00"
            + _u16(len(extensions)) + extensions)
    return tls_record(b"\x01" + _u24(len(body)) + body, b"\x03\x01")


def server_flight(certificates_der: list[bytes]) -> bytes:
    """ServerHello + Certificate (TLS 1.2, clear text) in one handshake record."""
    hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    chain = b"".join(_u24(len(der)) + der for der in certificates_der)
    certificate = _u24(len(chain)) + chain
    handshake = b"\x02" + _u24(len(hello)) + hello + b"\x0b" + _u24(len(certificate)) + certificate
    return tls_record(handshake)


def self_signed_der(common_name: str, dns_names: list[str]) -> bytes:
    """A self-signed EC certificate (DER) with subject/issuer CN and SAN DNS names."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.derive_private_key(12345, ec.SECP256R1())  # fixed key: deterministic tests
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)
