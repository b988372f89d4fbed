"""Crafted TLS-over-TCP captures for the robustness tests (scapy, no network)."""

from __future__ import annotations

import numpy as np


def tls_record(rtype: int, body: bytes) -> bytes:
    return bytes([rtype, 3, 3]) + len(body).to_bytes(2, "big") + body


def hello_records(rng: np.random.Generator) -> tuple[bytes, bytes]:
    """A well-formed ClientHello record (32-byte session id, one cipher suite) and the ServerHello
    record answering it, which echoes the session id (as TLS 1.3 middlebox compatibility mode does)."""
    sid = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    client_body = (bytes([3, 3]) + rng.integers(0, 256, 32, dtype=np.uint8).tobytes() + bytes([32]) + sid
                   + bytes([0, 2, 0x13, 0x01, 1, 0, 0, 0]))
    server_body = (bytes([3, 3]) + rng.integers(0, 256, 32, dtype=np.uint8).tobytes() + bytes([32]) + sid
                   + bytes([0x13, 0x01, 0, 0, 0]))
    client = tls_record(22, bytes([1]) + len(client_body).to_bytes(3, "big") + client_body)
    server = tls_record(22, bytes([2]) + len(server_body).to_bytes(3, "big") + server_body)
    return client, server


def tls_flow_packets(*, client_port: int = 40000, t0: float = 1_700_000_000.0, fin: bool = True,
                     marker: int | None = None, real_hello: bool = False) -> list:
    """One TCP flow with TLS-looking records both ways (handshake, data, FINs).

    ``marker``: when given, the client's application record body is that byte repeated (an easy,
    learnable difference between two classes); otherwise random bytes. ``real_hello``: a
    well-formed ClientHello and a ServerHello echoing its session id (:func:`hello_records`)
    instead of TLS-looking random handshake bytes.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    c, s = ("10.0.0.1", client_port), ("10.0.0.2", 443)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    rng = np.random.default_rng(client_port)
    # ClientHello: type 1, length 116, version 3.3, random (32), session id (32), 48 more bytes.
    hello = tls_record(22, bytes([1, 0, 0, 116, 3, 3]) + rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
                       + bytes([32]) + rng.integers(0, 256, 80, dtype=np.uint8).tobytes())
    server = tls_record(22, rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    if real_hello:
        hello, server = hello_records(rng)
    body = bytes([marker]) * 60 if marker is not None else rng.integers(0, 256, 60, dtype=np.uint8).tobytes()
    app = tls_record(23, body)
    cseq, sseq = 1000, 5000

    def pkt(src, dst, flags, seq, ack, data=b""):
        p = eth / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack)
        return p / Raw(data) if data else p

    packets = [
        pkt(c, s, "S", cseq, 0), pkt(s, c, "SA", sseq, cseq + 1), pkt(c, s, "A", cseq + 1, sseq + 1),
        pkt(c, s, "PA", cseq + 1, sseq + 1, hello),
        pkt(s, c, "PA", sseq + 1, cseq + 1 + len(hello), server),
        pkt(c, s, "PA", cseq + 1 + len(hello), sseq + 1 + len(server), app),
    ]
    end_c = cseq + 1 + len(hello) + len(app)
    end_s = sseq + 1 + len(server)
    if fin:
        packets += [pkt(c, s, "FA", end_c, end_s), pkt(s, c, "FA", end_s, end_c + 1), pkt(c, s, "A", end_c + 1, end_s + 1)]
    for i, p in enumerate(packets):
        p.time = t0 + 0.01 * i
    return packets


def write_tls_flow(path, *, client_port: int = 40000, fin: bool = True, real_hello: bool = False) -> None:
    """A capture holding one crafted TLS flow."""
    from scapy.utils import wrpcap

    wrpcap(str(path), tls_flow_packets(client_port=client_port, fin=fin, real_hello=real_hello))


def write_tls_capture(path, ports, *, marker: int | None = None) -> None:
    """A capture of several crafted TLS flows, one after another (one per client port)."""
    from scapy.utils import wrpcap

    packets = []
    for i, port in enumerate(ports):
        packets += tls_flow_packets(client_port=port, t0=1_700_000_000.0 + 10 * i, marker=marker, real_hello=True)
    wrpcap(str(path), packets)
