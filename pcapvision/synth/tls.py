"""Real TLS sessions run in memory: Python's ``ssl`` over ``MemoryBIO`` pairs and a local test PKI.

Nothing here pretends to be TLS: a client and a server :class:`ssl.SSLObject` are driven by
pumping bytes between their BIOs, and each chunk one side emits becomes what that side writes
to its TCP socket. Handshakes, record framing and ciphertext are exactly what OpenSSL emits.

Keys are EC P-256, derived from the run's seed, and certificates are signed with deterministic
ECDSA (RFC 6979), so certificates are identical across runs of the same seed. The TLS key
exchange, randoms and handshake signatures come from OpenSSL's own RNG and cannot be seeded:
ciphertext differs between runs, and a signature's DER length can differ by a byte or two.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1

# P-256 group order: private scalars are drawn in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# Certificates are valid around the simulated capture dates, whatever day the generator runs.
_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
_NOT_AFTER = dt.datetime(2028, 1, 1, tzinfo=dt.timezone.utc)

_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class ClientHelloShape:
    """How a TLS client library shapes its ClientHello (its fingerprint, as far as ``ssl`` allows).

    ``ciphers`` is an OpenSSL cipher string for TLS <= 1.2 (TLS 1.3 suites are fixed by OpenSSL);
    ``None`` keeps Python's default list. Versions are ``"1.2"`` or ``"1.3"``.
    """

    name: str
    ciphers: str | None = None
    alpn: tuple[str, ...] = ()
    min_version: str = "1.2"
    max_version: str = "1.3"
    session_tickets: bool = True
    middlebox_compat: bool = True
    post_handshake_auth: bool = False
    browser_like: bool = False


@dataclass(frozen=True)
class ServerShape:
    """How a TLS server answers: certificate kind, TLS 1.3 tickets, top version, ALPN it accepts."""

    cert_kind: str = "ca"  # "ca": leaf + intermediate chain; "self-signed": a lone self-signed leaf
    max_version: str = "1.3"
    num_tickets: int = 2
    alpn: tuple[str, ...] = ("h2", "http/1.1")


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class TestPki:
    """A throw-away PKI: one root CA, one intermediate, leaf and self-signed certs cached per name.

    PEM files live in a private temporary directory (``SSLContext.load_cert_chain`` only reads
    files); call :meth:`close` (or use as a context manager) to remove it.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0x715])
        # Private keys go to a RAM-backed directory where there is one: faster, and never on disk.
        shm = Path("/dev/shm")
        self._dir = tempfile.TemporaryDirectory(prefix="pcapvision-synth-pki-",
                                                dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)
        self._root_key = self._new_key()
        root_name = _name("Pcapvision Synthetic Root CA", "Pcapvision Test PKI")
        self._root_cert = self._build(root_name, root_name, self._root_key.public_key(), self._root_key, ca=True)
        self._ca_key = self._new_key()
        ca_name = _name("Pcapvision Synthetic Issuing CA R1", "Pcapvision Test PKI")
        self._ca_cert = self._build(ca_name, root_name, self._ca_key.public_key(), self._root_key, ca=True)
        self._ca_pem = self._ca_cert.public_bytes(serialization.Encoding.PEM)
        self._files: dict[tuple[str, str], tuple[Path, Path]] = {}

    def _new_key(self) -> ec.EllipticCurvePrivateKey:
        scalar = int.from_bytes(self._rng.bytes(32), "big") % (_P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())

    def _build(self, subject, issuer, public_key, signing_key, *, ca: bool, host: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(int.from_bytes(self._rng.bytes(16), "big") >> 1 or 1)
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if host is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return _sign(builder, signing_key)

    def cert_files(self, host: str, kind: str) -> tuple[Path, Path]:
        """(chain PEM, key PEM) for ``host``: CA-issued (leaf + intermediate) or self-signed."""
        key = (host, kind)
        if key not in self._files:
            leaf_key = self._new_key()
            if kind == "ca":
                cert = self._build(_name(host), self._ca_cert.subject, leaf_key.public_key(), self._ca_key,
                                   ca=False, host=host)
                chain = cert.public_bytes(serialization.Encoding.PEM) + self._ca_pem
            elif kind == "self-signed":
                subject = _name(host, "Internet Widgits Pty Ltd")
                cert = self._build(subject, subject, leaf_key.public_key(), leaf_key, ca=False, host=host)
                chain = cert.public_bytes(serialization.Encoding.PEM)
            else:
                raise ValueError(f"unknown certificate kind {kind!r}")
            stem = Path(self._dir.name) / f"{len(self._files):05d}"
            chain_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
            chain_path.write_bytes(chain)
            key_path.write_bytes(
                leaf_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            self._files[key] = (chain_path, key_path)
        return self._files[key]

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> TestPki:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    # Deterministic ECDSA keeps certificates (and their DER sizes) identical for the same seed.
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)


@dataclass
class TlsFactory:
    """Builds and caches the ``SSLContext`` objects of a run, and opens in-memory sessions."""

    pki: TestPki
    _clients: dict[ClientHelloShape, ssl.SSLContext] = field(default_factory=dict)
    _servers: dict[tuple[str, ServerShape], ssl.SSLContext] = field(default_factory=dict)

    def client_context(self, shape: ClientHelloShape) -> ssl.SSLContext:
        ctx = self._clients.get(shape)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # Traffic is generated, not trusted: certificate checks would change nothing on the wire.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = _TLS_VERSIONS[shape.min_version]
            ctx.maximum_version = _TLS_VERSIONS[shape.max_version]
            if shape.ciphers:
                ctx.set_ciphers(shape.ciphers)
            if shape.alpn:
                ctx.set_alpn_protocols(list(shape.alpn))
            if not shape.session_tickets:
                ctx.options |= ssl.OP_NO_TICKET
            if not shape.middlebox_compat:
                ctx.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
            ctx.post_handshake_auth = shape.post_handshake_auth
            self._clients[shape] = ctx
        return ctx

    def server_context(self, host: str, shape: ServerShape) -> ssl.SSLContext:
        key = (host, shape)
        ctx = self._servers.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.maximum_version = _TLS_VERSIONS[shape.max_version]
            # OpenSSL's own default list: unlike Python's server default it keeps the SHA-1 CBC
            # suites that old clients and implants still offer, as real servers mostly do.
            ctx.set_ciphers("DEFAULT")
            ctx.num_tickets = shape.num_tickets
            if shape.alpn:
                ctx.set_alpn_protocols(list(shape.alpn))
            chain, private_key = self.pki.cert_files(host, shape.cert_kind)
            ctx.load_cert_chain(chain, private_key)
            self._servers[key] = ctx
        return ctx

    def session(self, client: ClientHelloShape, server: ServerShape, server_name: str, sni: str | None) -> TlsSession:
        """A client/server pair ready to handshake; ``sni`` None sends no SNI (an IP literal neither)."""
        return TlsSession(self.client_context(client), self.server_context(server_name, server), sni)


class TlsSession:
    """One TLS connection between an in-memory client and server.

    Every method returns the *flights* it caused: ``(direction, bytes)`` chunks in the order the
    peers emitted them, direction 0 client->server and 1 server->client.
    """

    def __init__(self, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, sni: str | None) -> None:
        self._c_in, self._c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._s_in, self._s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_ctx.wrap_bio(self._c_in, self._c_out, server_side=False, server_hostname=sni)
        self.server = server_ctx.wrap_bio(self._s_in, self._s_out, server_side=True)

    def handshake(self) -> list[tuple[int, bytes]]:
        """Run the handshake to completion on both sides; the handshake flights."""
        flights: list[tuple[int, bytes]] = []
        client_done = server_done = False
        for _ in range(16):
            if not client_done:
                try:
                    self.client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            flights.extend(self._flush(CLIENT_TO_SERVER))
            if not server_done:
                try:
                    self.server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
            flights.extend(self._flush(SERVER_TO_CLIENT))
            if client_done and server_done:
                return flights
        raise RuntimeError("TLS handshake did not complete")  # pragma: no cover - OpenSSL bug

    def _flush(self, direction: int) -> list[tuple[int, bytes]]:
        out, peer_in = (self._c_out, self._s_in) if direction == CLIENT_TO_SERVER else (self._s_out, self._c_in)
        data = out.read()
        if not data:
            return []
        peer_in.write(data)
        return [(direction, data)]

    def send(self, direction: int, plaintext_bytes: int, write_size: int = 16384) -> bytes:
        """Send ``plaintext_bytes`` of application data; the TLS bytes that went on the wire.

        The receiver reads everything (so TLS 1.3 tickets and key updates are processed). Data is
        written in ``write_size`` pieces, each one or more records.
        """
        sender, receiver = (self.client, self.server) if direction == CLIENT_TO_SERVER else (self.server, self.client)
        out, peer_in = (self._c_out, self._s_in) if direction == CLIENT_TO_SERVER else (self._s_out, self._c_in)
        remaining = plaintext_bytes
        while remaining > 0:
            n = min(remaining, write_size)
            sender.write(bytes(n))  # content is irrelevant once encrypted; only its size shows
            remaining -= n
        wire = out.read()
        peer_in.write(wire)
        _drain(receiver)
        return wire

    def close(self, direction: int) -> bytes:
        """The closing side sends close_notify; the TLS bytes (the peer does not answer)."""
        sender = self.client if direction == CLIENT_TO_SERVER else self.server
        out = self._c_out if direction == CLIENT_TO_SERVER else self._s_out
        try:
            sender.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        return out.read()

    @property
    def version(self) -> str | None:
        return self.client.version()

    @property
    def alpn(self) -> str | None:
        return self.client.selected_alpn_protocol()


def _drain(obj: ssl.SSLObject) -> None:
    while True:
        try:
            if not obj.read(1 << 16):
                return
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            return
