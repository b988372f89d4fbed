"""In-memory TLS: real handshakes, ClientHello shaping, certificates from the test PKI."""

from __future__ import annotations

import struct

import pytest
from cryptography import x509

from pcapvision.synth.profiles import BROWSER_HELLOS, LIBRARY_HELLOS, MINIMAL_HELLOS
from pcapvision.synth.tls import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    ClientHelloShape,
    ServerShape,
    TestPki,
    TlsFactory,
)


@pytest.fixture(scope="module")
def factory():
    with TestPki(seed=11) as pki:
        yield TlsFactory(pki)


def _records(stream: bytes) -> list[tuple[int, bytes]]:
    """(content type, body) of each TLS record; fails on anything that is not record framing."""
    out, pos = [], 0
    while pos < len(stream):
        content_type, version, length = struct.unpack_from("!BHH", stream, pos)
        assert content_type in (20, 21, 22, 23) and version in (0x0301, 0x0303)
        out.append((content_type, stream[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    assert pos == len(stream)
    return out


def _extensions(client_hello: bytes) -> dict[int, bytes]:
    body = client_hello[4:]  # handshake header: type, 24-bit length
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    extensions = {}
    while pos < end:
        ext_type, length = struct.unpack_from("!HH", body, pos)
        extensions[ext_type] = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return extensions


def _client_hello(flights) -> bytes:
    direction, data = flights[0]
    assert direction == CLIENT_TO_SERVER
    (content_type, body), *_ = _records(data)
    assert content_type == 22 and body[0] == 1  # handshake, ClientHello
    return body


@pytest.mark.parametrize("shape", BROWSER_HELLOS + LIBRARY_HELLOS + MINIMAL_HELLOS, ids=lambda s: s.name)
def test_every_fingerprint_completes_a_handshake_and_carries_data(factory: TlsFactory, shape: ClientHelloShape) -> None:
    session = factory.session(shape, ServerShape(), "www.acmenews.com", "www.acmenews.com")
    flights = session.handshake()
    assert [d for d, _ in flights[:2]] == [CLIENT_TO_SERVER, SERVER_TO_CLIENT]
    expected = "TLSv1.2" if shape.max_version == "1.2" else "TLSv1.3"
    assert session.version == expected
    assert session.alpn == (shape.alpn[0] if shape.alpn else None)
    wire = session.send(CLIENT_TO_SERVER, 3000)
    records = _records(wire)
    assert {t for t, _ in records} == {23}  # application data only
    assert len(wire) > 3000  # ciphertext carries record overhead
    assert _records(session.close(CLIENT_TO_SERVER))[0][0] in (21, 23)  # close_notify (an encrypted alert in 1.3)


def test_client_hello_shape_shows_on_the_wire(factory: TlsFactory) -> None:
    browser = _client_hello(factory.session(BROWSER_HELLOS[0], ServerShape(), "a.example.org", "a.example.org").handshake())
    ext = _extensions(browser)
    assert b"a.example.org" in ext[0]  # server_name
    assert b"h2" in ext[16]  # ALPN
    assert 43 in ext  # supported_versions: TLS 1.3 offered

    bare = next(s for s in MINIMAL_HELLOS if s.max_version == "1.2" and not s.session_tickets)
    minimal = _client_hello(factory.session(bare, ServerShape(cert_kind="self-signed"), "10.1.2.3", None).handshake())
    ext = _extensions(minimal)
    assert 0 not in ext and 16 not in ext and 43 not in ext and 35 not in ext  # no SNI, ALPN, 1.3, tickets
    assert len(minimal) < len(browser)


def test_ip_literal_server_hostname_sends_no_sni(factory: TlsFactory) -> None:
    hello = _client_hello(factory.session(LIBRARY_HELLOS[0], ServerShape(), "198.51.100.7", "198.51.100.7").handshake())
    assert 0 not in _extensions(hello)


def test_certificates_ca_chain_versus_self_signed(factory: TlsFactory) -> None:
    ca = factory.session(LIBRARY_HELLOS[0], ServerShape(cert_kind="ca"), "shop.example.com", "shop.example.com")
    ca.handshake()
    leaf = x509.load_der_x509_certificate(ca.client.getpeercert(binary_form=True))
    assert leaf.issuer != leaf.subject
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["shop.example.com"]
    own = factory.session(LIBRARY_HELLOS[0], ServerShape(cert_kind="self-signed"), "c2.example.xyz", "c2.example.xyz")
    own.handshake()
    leaf = x509.load_der_x509_certificate(own.client.getpeercert(binary_form=True))
    assert leaf.issuer == leaf.subject


def test_same_seed_gives_identical_certificates_other_seed_does_not() -> None:
    def pem(seed: int) -> bytes:
        with TestPki(seed) as pki:
            chain, _ = pki.cert_files("www.example.com", "ca")
            return chain.read_bytes()

    assert pem(5) == pem(5)
    assert pem(5) != pem(6)


def test_tls13_server_sends_the_configured_number_of_tickets(factory: TlsFactory) -> None:
    sizes = []
    for tickets in (0, 2):
        session = factory.session(LIBRARY_HELLOS[0], ServerShape(num_tickets=tickets), "t.example.com", "t.example.com")
        flights = session.handshake()
        sizes.append(sum(len(d) for direction, d in flights if direction == SERVER_TO_CLIENT))
    assert sizes[1] > sizes[0] + 100
