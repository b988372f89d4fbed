"""Flow keys: the canonical bidirectional key of every packet of a batch, hashed and grouped.

A key is (VLAN id, IP version, protocol, the two (address, port) endpoints in canonical order:
the smaller (address, port) first), packed in five uint64 words; a packet's canonical direction
is 0 when it is sent by the first endpoint. Packets are grouped with one sort of a 64-bit hash;
a hash collision is detected exactly and the batch is then regrouped by the exact key.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pcapvision.ingest.packets import PacketBatch

__all__ = ["group_packets"]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arithmetic wraps, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def group_packets(batch: PacketBatch, stats: Counter[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canonical keys: (order grouping packets by key, stable; group starts in that order;
    canonical direction per packet; key words (n, 5) uint64). A batch regrouped after a hash
    collision counts in ``stats["hash_collision_batches"]``."""
    src = np.ascontiguousarray(batch.src_addr).view(">u8").astype(np.uint64)
    dst = np.ascontiguousarray(batch.dst_addr).view(">u8").astype(np.uint64)
    sport = batch.src_port.astype(np.uint64)
    dport = batch.dst_port.astype(np.uint64)
    s_hi, s_lo, d_hi, d_lo = src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]
    src_first = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sport <= dport))))
    direction = (~src_first).view(np.uint8)
    words = np.empty((len(batch), 5), np.uint64)
    words[:, 0] = np.where(src_first, s_hi, d_hi)
    words[:, 1] = np.where(src_first, s_lo, d_lo)
    words[:, 2] = np.where(src_first, d_hi, s_hi)
    words[:, 3] = np.where(src_first, d_lo, s_lo)
    port_a = np.where(src_first, sport, dport)
    port_b = np.where(src_first, dport, sport)
    words[:, 4] = ((batch.vlan_id.astype(np.uint64) << np.uint64(48))
                   | (batch.ip_version.astype(np.uint64) << np.uint64(40))
                   | (batch.protocol.astype(np.uint64) << np.uint64(32))
                   | (port_a << np.uint64(16)) | port_b)
    # Multiply-add of the words with odd constants, then one finaliser: collisions are
    # checked exactly below, so the hash only needs to spread keys well.
    h = words[:, 0] * np.uint64(0x9E3779B97F4A7C15)
    for k, multiplier in enumerate((0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                                    0xFF51AFD7ED558CCD), start=1):
        h += words[:, k] * np.uint64(multiplier)
    h = _mix64(h)
    # One plain sort of (hash, position) keys: the low bits hold the packet's position, so
    # packets of a key stay in capture order (cheaper than a stable argsort).
    n = len(batch)
    bits = max(1, (n - 1).bit_length())
    mask = np.uint64((1 << bits) - 1)
    sort_keys = (h & ~mask) | np.arange(n, dtype=np.uint64)
    sort_keys.sort()
    order = (sort_keys & mask).astype(np.int64)
    hs = sort_keys >> np.uint64(bits)
    same = hs[1:] == hs[:-1]
    as_void = np.dtype((np.void, 40))
    sorted_words = np.take(words, order, axis=0)
    sorted_void = sorted_words.view(as_void).ravel()
    collided = same & (sorted_void[1:] != sorted_void[:-1])
    if collided.any():
        stats["hash_collision_batches"] += 1
        order = np.lexsort(tuple(words[:, k] for k in range(4, -1, -1)))
        sorted_words = np.take(words, order, axis=0)
        sorted_void = sorted_words.view(as_void).ravel()
        same = sorted_void[1:] == sorted_void[:-1]
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    return order, starts, direction[order], sorted_words
