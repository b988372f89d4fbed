"""Plaintext DNS over UDP: the lookup a host makes before it connects to a name."""

from __future__ import annotations

import ipaddress
import struct

QTYPE_A = 1
QTYPE_AAAA = 28
_EDNS_OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # root name, OPT, 1232-byte UDP payload


def encode_name(name: str) -> bytes:
    """A domain name in DNS wire format (length-prefixed labels, no compression)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    return bytes(out) + b"\x00"


def query(txid: int, name: str, qtype: int) -> bytes:
    """A recursive query with an EDNS(0) OPT record, as stub resolvers send."""
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 1) + encode_name(name) + struct.pack("!HH", qtype, 1) + _EDNS_OPT


def response(txid: int, name: str, qtype: int, addresses: list[str], ttl: int) -> bytes:
    """The answer to :func:`query`: the addresses (NXDOMAIN when empty), names compressed to the question."""
    rcode = 0 if addresses else 3
    header = struct.pack("!HHHHHH", txid, 0x8180 | rcode, 1, len(addresses), 0, 1)
    body = bytearray(encode_name(name) + struct.pack("!HH", qtype, 1))
    for address in addresses:
        rdata = ipaddress.ip_address(address).packed
        body += struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata
    return header + bytes(body) + _EDNS_OPT
