"""Flow ids: a stable id per flow from the capture's hash, the canonical 5-tuple and the start time."""

from __future__ import annotations

import functools
import hashlib
import socket

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcapvision.ingest.arrays import bool_array, repeated_string_array, to_numpy
from pcapvision.ingest.constants import IPV4_MAPPED_PREFIX

__all__ = ["flow_id", "flow_ids"]


@functools.lru_cache(maxsize=65536)
def _packed(ip: str) -> bytes:
    # inet_pton is ~50x faster than ipaddress; the text comes from format_address, so it is valid.
    if ":" in ip:
        return socket.inet_pton(socket.AF_INET6, ip)
    return IPV4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, ip)


def flow_id(source_sha256: str, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: int,
            first_seen_ns: int, vlan_id: int = 0) -> str:
    """First 16 hex digits of SHA-256 over ``source_sha256``, the canonical 5-tuple, ``first_seen_ns``
    (and the VLAN id when there is one).

    The canonical 5-tuple orders the two endpoints by (16-byte address, port), as Community ID
    does, so the id does not depend on which end is the initiator. The hashed text is
    ``"{sha256}|{protocol}|{ip_a}|{port_a}|{ip_b}|{port_b}|{first_seen_ns}"``, followed by
    ``"|vlan{vlan_id}"`` for a tagged flow.
    """
    a, b = (_packed(src_ip), src_port, src_ip), (_packed(dst_ip), dst_port, dst_ip)
    if b[:2] < a[:2]:
        a, b = b, a
    text = f"{source_sha256}|{protocol}|{a[2]}|{a[1]}|{b[2]}|{b[1]}|{first_seen_ns}"
    if vlan_id:
        text += f"|vlan{vlan_id}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _decimal(integers: pa.Array) -> pa.StringArray:
    return pc.cast(integers, pa.string())  # as Python's str(int)


def flow_ids(flows: pa.RecordBatch, source_sha256: str) -> list[str]:
    """:func:`flow_id` of every flow of a batch: Arrow lays out the hashed texts, Python only hashes."""
    n = flows.num_rows
    if not n:
        return []
    src, dst = flows.column("src_ip"), flows.column("dst_ip")
    src_port, dst_port = flows.column("src_port"), flows.column("dst_port")
    # Canonical order: by (16-byte address, port); big-endian words compare as the bytes do.
    src_words, dst_words = (np.frombuffer(b"".join(map(_packed, column.to_pylist())), ">u8").reshape(n, 2)
                            for column in (src, dst))
    sport, dport = to_numpy(src_port), to_numpy(dst_port)
    swap = ((dst_words[:, 0] < src_words[:, 0])
            | ((dst_words[:, 0] == src_words[:, 0]) & ((dst_words[:, 1] < src_words[:, 1])
                                                      | ((dst_words[:, 1] == src_words[:, 1]) & (dport < sport)))))
    swapped = bool_array(swap)
    parts = [repeated_string_array(source_sha256, n), _decimal(flows.column("protocol")),
             pc.if_else(swapped, dst, src), _decimal(pc.if_else(swapped, dst_port, src_port)),
             pc.if_else(swapped, src, dst), _decimal(pc.if_else(swapped, src_port, dst_port)),
             _decimal(flows.column("first_seen_ns"))]
    texts = pc.binary_join_element_wise(*parts, repeated_string_array("|", n))
    vlan = flows.column("vlan_id")
    if to_numpy(vlan).any():
        empty = repeated_string_array("", n)
        suffix = pc.binary_join_element_wise(repeated_string_array("|vlan", n), _decimal(vlan), empty)
        texts = pc.binary_join_element_wise(texts, pc.if_else(bool_array(to_numpy(vlan) != 0), suffix, empty), empty)
    offsets = np.frombuffer(texts.buffers()[1], np.int32, n + 1, texts.offset * 4).tolist()
    data = memoryview(texts.buffers()[2])
    sha256 = hashlib.sha256
    return [sha256(data[start:end]).hexdigest()[:16] for start, end in zip(offsets[:-1], offsets[1:])]
