"""Community ID v1 flow hashes (https://github.com/corelight/community-id-spec).

``1:`` + base64(SHA-1(seed, addresses, protocol, ports)), with the endpoints ordered so that both
directions of a flow give the same ID. Supported: TCP, UDP and SCTP (with ports) and other
IP-borne protocols without ports. ICMP/ICMPv6 need the spec's type/code mapping and are refused.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import struct

import numpy as np

from pcapvision.errors import ParameterError
from pcapvision.ingest.constants import IPV4_MAPPED_PREFIX
from pcapvision.validation import check_int

__all__ = ["community_id", "community_id_packed", "community_ids"]

_PORT_PROTOCOLS = frozenset({6, 17, 132})  # TCP, UDP, SCTP
_ICMP_PROTOCOLS = frozenset({1, 58})
_SEED = struct.Struct("!H")
_PORT_TAIL = struct.Struct("!BxHH")
_PROTO_TAIL = struct.Struct("!Bx")


def community_id_packed(
    addr_a: bytes, addr_b: bytes, port_a: int, port_b: int, protocol: int, seed: int = 0
) -> str:
    """Community ID of a flow given packed addresses (4 bytes IPv4, 16 bytes IPv6).

    16-byte IPv4-mapped addresses (``::ffff:a.b.c.d``, the form of :mod:`pcapvision.ingest.packets`)
    are hashed as IPv4, as the spec requires. The order of the two endpoints does not matter.
    No validation: this is the per-flow hot path of the flow assembler.
    """
    if len(addr_a) == 16 and addr_a[:12] == IPV4_MAPPED_PREFIX and addr_b[:12] == IPV4_MAPPED_PREFIX:
        addr_a, addr_b = addr_a[12:], addr_b[12:]
    if protocol in _PORT_PROTOCOLS:
        if (addr_b, port_b) < (addr_a, port_a):
            addr_a, addr_b, port_a, port_b = addr_b, addr_a, port_b, port_a
        tail = _PORT_TAIL.pack(protocol, port_a, port_b)
    else:
        if addr_b < addr_a:
            addr_a, addr_b = addr_b, addr_a
        tail = _PROTO_TAIL.pack(protocol)
    digest = hashlib.sha1(_SEED.pack(seed) + addr_a + addr_b + tail, usedforsecurity=False).digest()
    return "1:" + binascii.b2a_base64(digest, newline=False).decode("ascii")


def community_ids(addr_a: np.ndarray, addr_b: np.ndarray, port_a: np.ndarray, port_b: np.ndarray,
                  protocol: np.ndarray, seed: int = 0) -> list[str]:
    """:func:`community_id_packed` of many flows: ``addr_a``/``addr_b`` are (n, 16) uint8 arrays
    (IPv4 as IPv4-mapped IPv6), the others length-n integer arrays.

    The hashed messages are laid out with numpy, so Python runs only the SHA-1 and base64 of each
    flow (the flow assembler calls this for every batch of finished flows).
    """
    n = len(addr_a)
    addr_a, addr_b = np.asarray(addr_a, np.uint8).reshape(n, 16), np.asarray(addr_b, np.uint8).reshape(n, 16)
    protocol = np.asarray(protocol, np.uint8)
    prefix = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)
    v4 = (addr_a[:, :12] == prefix).all(axis=1) & (addr_b[:, :12] == prefix).all(axis=1)
    with_ports = np.isin(protocol, list(_PORT_PROTOCOLS))
    port_a = np.where(with_ports, port_a, 0).astype(np.int64)
    port_b = np.where(with_ports, port_b, 0).astype(np.int64)
    # Order the endpoints by (address, port); big-endian words compare as the bytes do (the
    # shared IPv4-mapped prefix does not change the order of IPv4 addresses).
    a_hi, a_lo = addr_a.view(">u8").T
    b_hi, b_lo = addr_b.view(">u8").T
    swap = (b_hi < a_hi) | ((b_hi == a_hi) & ((b_lo < a_lo) | ((b_lo == a_lo) & (port_b < port_a))))
    first = np.where(swap[:, None], addr_b, addr_a)
    second = np.where(swap[:, None], addr_a, addr_b)
    p1 = np.where(swap, port_b, port_a)
    p2 = np.where(swap, port_a, port_b)
    # Message: seed, the two addresses (4 bytes for IPv4), protocol, a zero byte, then the two
    # ports for protocols with ports. Rows of 40 bytes, each message a prefix of its row.
    rows = np.zeros((n, 40), np.uint8)
    rows[:, 0:2] = np.frombuffer(_SEED.pack(seed), np.uint8)
    rows[:, 2:18] = first
    rows[:, 18:34] = second
    rows[v4, 2:6] = first[v4, 12:]
    rows[v4, 6:10] = second[v4, 12:]
    tail = np.where(v4, 10, 34)
    r = np.arange(n)
    rows[r, tail] = protocol
    rows[r, tail + 1] = 0
    rows[r, tail + 2], rows[r, tail + 3] = p1 >> 8, p1 & 0xFF  # ports big-endian
    rows[r, tail + 4], rows[r, tail + 5] = p2 >> 8, p2 & 0xFF
    lengths = tail + np.where(with_ports, 6, 2)
    packed = rows.tobytes()
    sha1, b2a = hashlib.sha1, binascii.b2a_base64
    return ["1:" + b2a(sha1(packed[o : o + m], usedforsecurity=False).digest(), newline=False).decode("ascii")
            for o, m in zip(range(0, 40 * n, 40), lengths.tolist())]


def community_id(
    src_ip: str | bytes,
    dst_ip: str | bytes,
    src_port: int | None,
    dst_port: int | None,
    protocol: int,
    seed: int = 0,
) -> str:
    """Community ID v1 of a flow, e.g. ``community_id("1.2.3.4", "5.6.7.8", 1122, 3344, 6)``.

    Addresses are text or packed bytes (4 or 16 bytes); both must be of the same family. Ports are
    required for TCP/UDP/SCTP and ignored for other protocols. Raises
    :class:`~pcapvision.errors.ParameterError` on invalid input.
    """
    protocol = check_int("protocol", protocol, min_value=0, max_value=255)
    seed = check_int("seed", seed, min_value=0, max_value=0xFFFF)
    if protocol in _ICMP_PROTOCOLS:
        raise ParameterError(f"The 'protocol' parameter must not be ICMP (1 or 58): Community ID of ICMP "
                             f"needs type/code mapping, which is not implemented. Got {protocol!r} instead.")
    a = _packed(src_ip, "src_ip")
    b = _packed(dst_ip, "dst_ip")
    if len(a) != len(b):
        raise ParameterError(f"The 'dst_ip' parameter must be of the same IP version as 'src_ip'. "
                             f"Got {dst_ip!r} instead.")
    if protocol in _PORT_PROTOCOLS:
        src_port = check_int("src_port", src_port, min_value=0, max_value=0xFFFF)
        dst_port = check_int("dst_port", dst_port, min_value=0, max_value=0xFFFF)
    else:
        src_port = dst_port = 0
    return community_id_packed(a, b, src_port, dst_port, protocol, seed)


def _packed(address: str | bytes, name: str) -> bytes:
    if isinstance(address, bytes):
        if len(address) not in (4, 16):
            raise ParameterError(f"The '{name}' parameter must be 4 or 16 packed bytes. Got {address!r} instead.")
        packed = address
    else:
        try:
            packed = ipaddress.ip_address(address).packed
        except ValueError:
            raise ParameterError(f"The '{name}' parameter must be an IP address. Got {address!r} instead.") from None
    if len(packed) == 16 and packed[:12] == IPV4_MAPPED_PREFIX:
        return packed[12:]
    return packed
