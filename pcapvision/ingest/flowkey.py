"""Flow keys: the canonical bidirectional key of every packet of a batch, and its hash.

A key is (VLAN id, IP version, protocol, the two (address, port) endpoints in canonical order:
the smaller (address, port) first), packed in five uint64 words; a packet's canonical direction
is 0 when it is sent by the first endpoint. The hash only places keys in the open-flow table
(:mod:`~pcapvision.ingest.flowtable`), which compares whole keys, so collisions cost a probe,
never a wrong flow.
"""

from __future__ import annotations

import numpy as np

from pcapvision.ingest.jit import compiled
from pcapvision.ingest.packets import PacketBatch

__all__ = ["packet_keys"]


def packet_keys(batch: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key words (n, 5) uint64, canonical direction (n,) uint8, key hash (n,) int64)."""
    n = len(batch)
    words = np.empty((n, 5), np.uint64)
    direction = np.empty(n, np.uint8)
    hashes = np.empty(n, np.int64)
    _packet_keys(np.ascontiguousarray(batch.src_addr), np.ascontiguousarray(batch.dst_addr), batch.src_port,
                 batch.dst_port, batch.vlan_id, batch.ip_version, batch.protocol, words, direction, hashes)
    return words, direction, hashes


@compiled
def _be64(addr, i, at):  # pragma: no cover - compiled
    value = np.uint64(0)
    for k in range(8):
        value = (value << np.uint64(8)) | np.uint64(addr[i, at + k])
    return value


@compiled
def _mix64(x):  # pragma: no cover - compiled
    """splitmix64 finaliser (uint64 arithmetic wraps, as intended)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@compiled
def _packet_keys(src, dst, sport, dport, vlan, ipver, proto, words, direction, hashes):  # pragma: no cover
    for i in range(src.shape[0]):
        s_hi, s_lo, d_hi, d_lo = _be64(src, i, 0), _be64(src, i, 8), _be64(dst, i, 0), _be64(dst, i, 8)
        sp, dp = np.uint64(sport[i]), np.uint64(dport[i])
        src_first = s_hi < d_hi or (s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and sp <= dp)))
        if src_first:
            direction[i] = 0
            words[i, 0], words[i, 1], words[i, 2], words[i, 3] = s_hi, s_lo, d_hi, d_lo
            port_a, port_b = sp, dp
        else:
            direction[i] = 1
            words[i, 0], words[i, 1], words[i, 2], words[i, 3] = d_hi, d_lo, s_hi, s_lo
            port_a, port_b = dp, sp
        words[i, 4] = ((np.uint64(vlan[i]) << np.uint64(48)) | (np.uint64(ipver[i]) << np.uint64(40))
                       | (np.uint64(proto[i]) << np.uint64(32)) | (port_a << np.uint64(16)) | port_b)
        # Multiply-add of the words with odd constants, then one finaliser.
        h = (words[i, 0] * np.uint64(0x9E3779B97F4A7C15) + words[i, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
             + words[i, 2] * np.uint64(0x165667B19E3779F9) + words[i, 3] * np.uint64(0xD6E8FEB86659FD93)
             + words[i, 4] * np.uint64(0xFF51AFD7ED558CCD))
        hashes[i] = np.int64(_mix64(h) >> np.uint64(1))  # non-negative: used with "& mask"
