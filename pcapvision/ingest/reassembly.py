"""Payload collection: a batch's TCP segments and UDP datagrams -> the flows' payload buffers.

:func:`collect_payload` handles the common case with array arithmetic: UDP, and TCP directions
whose segments all start within the bytes already contiguous (in order, retransmitted,
overlapping). Flow segments with a segment beyond the contiguous end (a hole), or a direction
already in hole mode, are replayed packet by packet by :func:`payload_by_packet`. The rules
(initial sequence number, first-seen bytes win, contiguous prefix, ``max_bytes``) are those of
:mod:`pcapvision.ingest.assembler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pcapvision.ingest.flowbuffers import FlowBuffers
from pcapvision.ingest.jit import compiled

if TYPE_CHECKING:
    from pcapvision.ingest.assembler import FlowAssembler

__all__ = ["collect_payload", "payload_by_packet"]


def _gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, groups: np.ndarray,
            n_groups: int) -> tuple[memoryview, np.ndarray]:
    """Concatenate the byte ranges ``data[start:start+length]`` in order; also return the total
    length per group (``groups`` sorted)."""
    totals = np.bincount(groups, weights=lengths, minlength=n_groups).astype(np.int64)
    out = np.empty(int(totals.sum()), np.uint8)
    _copy_ranges(data, starts, lengths, out)
    return memoryview(out), totals


@compiled
def _copy_ranges(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """``out`` = the ranges ``data[starts[i] : starts[i] + lengths[i]]`` one after another (one
    compiled loop instead of a Python slice and a ``bytes`` object per payload piece)."""
    pos = 0
    for i in range(starts.shape[0]):
        n = lengths[i]
        if n > 0:
            out[pos : pos + n] = data[starts[i] : starts[i] + n]
            pos += n


def collect_payload(asm: FlowAssembler, batch, order, slots, seg_id, dc, syn_flag, plen, seg_tcp) -> None:
    """Extend the per-direction streams and the interleaved payload's runs with this batch.

    Vectorised for the common case: UDP, and TCP directions whose segments all start within
    the bytes already contiguous (in order, retransmitted, overlapping). A flow segment with
    any segment beyond its direction's contiguous end (a hole), or already in hole mode, is
    replayed packet by packet in :func:`payload_by_packet`.
    """
    max_bytes = asm._max_bytes
    seg_slot = slots[seg_id]
    # Packets that may still add bytes (or fix an initial sequence number via a SYN).
    idx = np.flatnonzero(((plen > 0) | syn_flag) & ~asm._done[seg_slot, dc])
    m = len(idx)
    if not m:
        return
    packet = order[idx]
    e_seg = seg_id[idx]
    e_slot = seg_slot[idx]
    e_dir = dc[idx]
    e_len = plen[idx]
    e_tcp = seg_tcp[e_seg]
    e_off = batch.payload_offset[packet].astype(np.int64)
    e_dseq = (batch.tcp_seq[packet].astype(np.int64) + syn_flag[idx]) & 0xFFFFFFFF  # data follows a SYN
    piece_src = np.zeros(m, np.int64)
    piece_len = np.zeros(m, np.int64)
    replay = np.zeros(len(slots), bool)  # flow segments handled packet by packet
    per_dir = []
    for d in (0, 1):
        sel = np.flatnonzero(e_dir == d)
        if not len(sel):
            continue
        seg = e_seg[sel]
        first = np.concatenate([[True], seg[1:] != seg[:-1]])
        gstarts = np.flatnonzero(first)
        grp = np.cumsum(first) - 1
        gslot = e_slot[sel][gstarts]
        gtcp = e_tcp[sel][gstarts]
        e0 = asm._end[gslot, d]
        ln = e_len[sel]
        off = e_off[sel]
        # UDP: datagrams appended in arrival order up to max_bytes.
        c = np.cumsum(ln) - ln
        udp_prev = e0[grp] + c - c[gstarts][grp]
        udp_len = np.clip(max_bytes - udp_prev, 0, ln)
        # TCP: offsets from the initial sequence number (the first SYN/data seen), mod 2**32.
        base0 = asm._base[gslot, d]
        base = np.where(base0 >= 0, base0, e_dseq[sel][gstarts])
        rel = (e_dseq[sel] - base[grp]) & 0xFFFFFFFF
        rel = np.where(rel >= 0x80000000, rel - 0x100000000, rel)
        lo = np.maximum(rel, 0)
        hi = np.minimum(rel + ln, max_bytes)
        valid = lo < hi
        hiv = np.where(valid, hi, 0)
        shift = grp * (max_bytes + 1)  # keeps the running maximum inside each group
        running = np.maximum.accumulate(hiv + shift) - shift
        before = np.zeros(len(sel), np.int64)
        before[1:] = running[:-1]
        before[gstarts] = 0
        prev_end = np.maximum(e0[grp], before)
        beyond = np.bincount(grp, weights=valid & (lo > prev_end), minlength=len(gstarts)) > 0
        bad = gtcp & (beyond | asm._hole[gslot, d])
        replay[seg[gstarts][bad]] = True
        tcp_len = np.where(valid, np.maximum(hi - prev_end, 0), 0)
        tcp = gtcp[grp]
        piece_len[sel] = np.where(tcp, tcp_len, udp_len)
        piece_src[sel] = np.where(tcp, off + prev_end - rel, off)
        has_data = ln > 0
        retrans = tcp & has_data & np.where(valid, hi <= prev_end, rel + ln <= prev_end)
        overlap = tcp & valid & (lo < prev_end) & (hi > prev_end)
        new_end = np.where(gtcp, np.maximum(e0, np.maximum.reduceat(hiv, gstarts)),
                           np.minimum(e0 + np.add.reduceat(ln, gstarts), max_bytes))
        per_dir.append((d, sel, grp, gstarts, gslot, gtcp, base, new_end, retrans, overlap))

    keep = ~replay[e_seg]
    piece_len[~keep] = 0
    data = batch.data
    bufs = asm._bufs
    for d, sel, grp, gstarts, gslot, gtcp, base, new_end, retrans, overlap in per_dir:
        ok_entry = keep[sel]
        ok = ok_entry[gstarts]
        asm.stats["retransmitted_segments"] += int(np.count_nonzero(retrans & ok_entry))
        asm.stats["overlapping_segments"] += int(np.count_nonzero(overlap & ok_entry))
        g_ok = np.flatnonzero(ok)
        asm._end[gslot[g_ok], d] = new_end[g_ok]
        tcp_ok = g_ok[gtcp[g_ok]]
        asm._base[gslot[tcp_ok], d] = base[tcp_ok]
        asm._done[gslot[g_ok], d] = new_end[g_ok] >= max_bytes
        # Stream bytes: one gather per direction, one append per (flow, direction).
        lens = piece_len[sel]
        gathered, totals = _gather(data, piece_src[sel], lens, grp, len(gstarts))
        if gathered:
            pos = 0
            for slot, total in zip(gslot.tolist(), totals.tolist()):
                if total:
                    bufs[slot].streams[d].extend(gathered[pos : pos + total])
                    pos += total

    # Interleaved payload, in arrival order within each flow, capped at max_bytes.
    first = np.concatenate([[True], e_seg[1:] != e_seg[:-1]])
    gstarts = np.flatnonzero(first)
    grp = np.cumsum(first) - 1
    gslot = e_slot[gstarts]
    room = max_bytes - asm._paylen[gslot]
    c = np.cumsum(piece_len) - piece_len
    taken_before = c - c[gstarts][grp]
    take = np.clip(room[grp] - taken_before, 0, piece_len)
    asm._paylen[gslot] += np.bincount(grp, weights=take, minlength=len(gstarts)).astype(np.int64)
    # Runs: consecutive pieces of one flow and direction (see FlowBuffers).
    taken = np.flatnonzero(take)
    if len(taken):
        t_grp, t_dir = grp[taken], e_dir[taken]
        run_start = np.flatnonzero(np.concatenate([[True], (t_grp[1:] != t_grp[:-1])
                                                   | (t_dir[1:] != t_dir[:-1])]))
        run_len = np.add.reduceat(take[taken], run_start)
        runs = memoryview(((run_len << 1) | t_dir[run_start]).astype(np.int64).tobytes())
        run_grp = t_grp[run_start]
        has_runs = np.flatnonzero(np.bincount(run_grp, minlength=len(gstarts)))
        ends = np.searchsorted(run_grp, has_runs, side="right").tolist()
        lo = 0
        for slot, hi in zip(gslot[has_runs].tolist(), ends):
            bufs[slot].runs.frombytes(runs[8 * lo : 8 * hi])
            lo = hi

    if replay.any():
        payload_by_packet(asm, batch, np.flatnonzero(~keep), e_slot, e_dir, e_len, e_off, e_dseq,
                                syn_flag[idx])


def payload_by_packet(asm: FlowAssembler, batch, entries, e_slot, e_dir, e_len, e_off, e_dseq, e_syn) -> None:
    """Packet-by-packet TCP reassembly (holes, out-of-order segments) of the given entries."""
    max_bytes = asm._max_bytes
    data = memoryview(batch.data)
    bufs = asm._bufs
    stats = asm.stats
    state: dict[tuple[int, int], list[int]] = {}  # (slot, dir) -> [base, end]
    paylen: dict[int, int] = {}  # slot -> length of the interleaved payload

    def to_payload(slot: int, buf: FlowBuffers, d: int, length: int) -> None:
        """The next ``length`` contiguous bytes of direction ``d`` join the payload (capped)."""
        taken = paylen[slot] if slot in paylen else int(asm._paylen[slot])
        if taken < max_bytes:
            buf.add_run(d, min(length, max_bytes - taken))
            paylen[slot] = min(taken + length, max_bytes)

    for slot, d, length, off, seq, is_syn in zip(
        e_slot[entries].tolist(), e_dir[entries].tolist(), e_len[entries].tolist(),
        e_off[entries].tolist(), e_dseq[entries].tolist(), e_syn[entries].tolist(),
    ):
        st = state.get((slot, d))
        if st is None:
            st = state[(slot, d)] = [int(asm._base[slot, d]), int(asm._end[slot, d])]
        base, end = st
        if end >= max_bytes:
            continue
        if base < 0:
            if not (is_syn or length):
                continue
            base = st[0] = seq
        if not length:
            continue
        buf = bufs[slot]
        stream = buf.streams[d]
        have = buf.holes[d] if buf.holes is not None else None
        rel = (seq - base) & 0xFFFFFFFF
        if rel >= 0x80000000:
            rel -= 0x100000000
        lo = rel if rel > 0 else 0
        hi = min(rel + length, max_bytes)
        if lo >= hi:  # entirely before the initial seq, or beyond the kept window
            if rel + length <= end:
                stats["retransmitted_segments"] += 1
            continue
        if have is None:
            if lo <= end:  # in order: append what is new
                if hi <= end:
                    stats["retransmitted_segments"] += 1
                    continue
                if lo < end:
                    stats["overlapping_segments"] += 1
                stream += data[off + end - rel : off + hi - rel]
                st[1] = hi
                to_payload(slot, buf, d, hi - end)
                continue
            have = buf.to_hole_mode(d, max_bytes, end)
        if lo > end:
            stats["out_of_order_segments"] += 1
        if have.find(1, lo, hi) == -1:
            stream[lo:hi] = data[off + lo - rel : off + hi - rel]
            have[lo:hi] = b"\x01" * (hi - lo)
        else:  # first-seen bytes win: write only the runs not received yet
            new_bytes = False
            i = lo
            while i < hi:
                z = have.find(0, i, hi)
                if z == -1:
                    break
                o = have.find(1, z, hi)
                if o == -1:
                    o = hi
                stream[z:o] = data[off + z - rel : off + o - rel]
                have[z:o] = b"\x01" * (o - z)
                new_bytes = True
                i = o
            stats["overlapping_segments" if new_bytes else "retransmitted_segments"] += 1
        if lo <= end:
            new_end = have.find(0, end)
            if new_end == -1:
                new_end = max_bytes
            st[1] = new_end
            to_payload(slot, buf, d, new_end - end)
    for (slot, d), (base, end) in state.items():
        asm._base[slot, d] = base
        asm._end[slot, d] = end
        asm._done[slot, d] = end >= max_bytes
        asm._hole[slot, d] = bufs[slot].holes is not None and bufs[slot].holes[d] is not None
    for slot, taken in paylen.items():
        asm._paylen[slot] = taken
