"""IPv4 and IPv6 fragment reassembly for the capture readers (bounded, with a timeout).

Readers hand every TCP/UDP fragment (the IP packet bytes) to one :class:`Defragmenter` per
capture; it returns the reassembled IP packet once the last byte of a datagram has arrived, which
the reader then decodes like any other packet (at the time and record number of the fragment
that completed it). Datagrams are keyed as the IP stacks key them: IPv4 (source, destination,
protocol, identification), IPv6 (source, destination, identification).

Rules (``docs/ingest.md``):

* **Overlaps: first arrival wins.** A byte already received is never overwritten by a later
  fragment that overlaps it, whatever its content (the policy of most stacks since the overlap
  attacks); only the bytes not yet received are taken from it.
* **Timeout.** A datagram still incomplete :data:`TIMEOUT_NS` after its first fragment (capture
  clock) is dropped, its fragments counted ``fragment_timeout``; at the end of the capture the
  remaining ones count ``fragment_incomplete``.
* **Bounds.** At most :data:`MAX_DATAGRAMS` datagrams and :data:`MAX_BUFFERED_BYTES` bytes are held;
  beyond that the oldest datagram is dropped (``fragment_overflow``). A fragment reaching past
  65,535 bytes, a non-last fragment whose length is not a multiple of 8, or one extending past
  the end set by the last fragment counts ``fragment_bad``.
* **Counts add up.** Of a reassembled datagram, the completing fragment becomes the packet and
  the other fragments count ``fragment_merged``.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pcapvision.ingest.constants import LINKTYPE_RAW

__all__ = ["FRAGMENT_REASONS", "Defragmenter", "Fragment"]

TIMEOUT_NS = 30 * 10**9  # Linux's ipfrag_time
MAX_DATAGRAMS = 4096
MAX_BUFFERED_BYTES = 64 << 20
MAX_DATAGRAM = 65535  # IP payload bytes a fragmented datagram may reach (no jumbograms)
FRAGMENT_REASONS = ("fragment_merged", "fragment_timeout", "fragment_incomplete", "fragment_overflow",
                    "fragment_bad", "fragment_truncated")


@dataclass(frozen=True)
class Fragment:
    """One IP fragment as a reader found it: enough to rebuild the datagram's IP packet."""

    version: int
    key: bytes  # what identifies the datagram (addresses, protocol/identification)
    header: bytes  # the IP header to rebuild the datagram with (IPv6: up to the fragment header)
    offset: int  # in bytes, of this fragment's data in the datagram's payload
    more: bool  # more fragments follow
    data: bytes  # this fragment's share of the payload
    next_header: int = 0  # IPv6: the fragment header's next header
    next_header_at: int = 6  # IPv6: where in ``header`` the byte announcing the fragment header is
    vlan_id: int = 0  # outermost VLAN tag of the frame (part of ``key`` when not 0)


@dataclass
class _Datagram:
    first_ts: int
    header: bytes = b""  # from the fragment at offset 0
    fragment: Fragment | None = None  # the fragment at offset 0
    buf: bytearray = field(default_factory=bytearray)
    have: bytearray = field(default_factory=bytearray)
    total: int = -1  # payload length, known once the last fragment arrived
    fragments: int = 0


class Defragmenter:
    """Reassembles the fragments of one capture, in capture order."""

    def __init__(self) -> None:
        self._pending: OrderedDict[bytes, _Datagram] = OrderedDict()
        self._buffered = 0
        self._clock = -(1 << 63)
        self.skipped: Counter[str] = Counter()  # fragments that did not become a packet, by reason

    def add(self, fragment: Fragment, ts_ns: int) -> bytes | None:
        """Take one fragment; the rebuilt IP packet when it completes a datagram, else None."""
        end = fragment.offset + len(fragment.data)
        if end > MAX_DATAGRAM or (fragment.more and len(fragment.data) % 8):
            self.skipped["fragment_bad"] += 1
            return None
        datagram = self._pending.get(fragment.key)
        if datagram is not None and ts_ns - datagram.first_ts > TIMEOUT_NS:  # same key, too late: a new one
            self._drop(fragment.key, "fragment_timeout")
            datagram = None
        if datagram is None:
            self._make_room(end)
            datagram = self._pending[fragment.key] = _Datagram(ts_ns)
        if (datagram.total >= 0 and end > datagram.total) or (not fragment.more and datagram.total >= 0
                                                              and end != datagram.total):
            self.skipped["fragment_bad"] += 1
            return None
        if not fragment.more:
            if datagram.have.find(1, end) != -1:  # bytes already received past the announced end
                self.skipped["fragment_bad"] += 1
                return None
            datagram.total = end
        datagram.fragments += 1
        if len(datagram.buf) < end:
            grow = end - len(datagram.buf)
            datagram.buf.extend(bytes(grow))
            datagram.have.extend(bytes(grow))
            self._buffered += grow
        have, buf = datagram.have, datagram.buf
        lo = fragment.offset
        i = lo
        while i < end:  # first arrival wins: take only the bytes not received yet
            z = have.find(0, i, end)
            if z == -1:
                break
            o = have.find(1, z, end)
            o = end if o == -1 else o
            buf[z:o] = fragment.data[z - lo : o - lo]
            have[z:o] = b"\x01" * (o - z)
            i = o
        if lo == 0 and datagram.fragment is None:
            datagram.fragment = fragment
        if datagram.total < 0 or datagram.fragment is None or have.find(0, 0, datagram.total) != -1:
            return None
        del self._pending[fragment.key]
        self._buffered -= len(buf)
        self.skipped["fragment_merged"] += datagram.fragments - 1
        return _rebuild(datagram.fragment, bytes(buf[: datagram.total]))

    def expire(self, chunk_max_ns: int) -> None:
        """After a chunk (its largest timestamp): drop the datagrams whose first fragment is older
        than the timeout on the capture clock (the largest timestamp so far)."""
        self._clock = max(self._clock, chunk_max_ns)
        for key in [k for k, dg in self._pending.items() if self._clock - dg.first_ts > TIMEOUT_NS]:
            self._drop(key, "fragment_timeout")

    def finish(self) -> None:
        """End of capture: every datagram still incomplete is counted ``fragment_incomplete``."""
        for key in list(self._pending):
            self._drop(key, "fragment_incomplete")

    def _make_room(self, size: int) -> None:
        while self._pending and (len(self._pending) >= MAX_DATAGRAMS
                                 or self._buffered + size > MAX_BUFFERED_BYTES):
            self._drop(next(iter(self._pending)), "fragment_overflow")

    def _drop(self, key: bytes, reason: str) -> None:
        datagram = self._pending.pop(key)
        self._buffered -= len(datagram.buf)
        self.skipped[reason] += datagram.fragments

    def take_skipped(self) -> Counter[str]:
        """The counts gathered since the last call (readers add them to the current batch)."""
        out, self.skipped = self.skipped, Counter()
        return out


def ipv4_fragment(frame: bytes, ip_start: int, header_len: int, total_len: int) -> Fragment | str:
    """The :class:`Fragment` of an IPv4 fragment (TCP/UDP) at ``ip_start``, or a skip reason."""
    if not total_len or len(frame) < ip_start + total_len:  # snaplen cut it: its data is incomplete
        return "fragment_truncated"
    ip = frame[ip_start : ip_start + total_len]
    flags_offset = (ip[6] << 8) | ip[7]
    key = b"\x04" + ip[12:20] + ip[9:10] + ip[4:6]  # addresses, protocol, identification
    return Fragment(4, key, ip[:header_len], (flags_offset & 0x1FFF) * 8, bool(flags_offset & 0x2000),
                    ip[header_len:])


def ipv6_fragment(frame: bytes, ip_start: int, ip_bytes: int, frag_at: int, announced_at: int) -> Fragment | str:
    """The :class:`Fragment` of an IPv6 fragment whose fragment header is at ``frag_at`` (the byte
    announcing it at ``announced_at``), or a skip reason."""
    if len(frame) < ip_start + ip_bytes or len(frame) < frag_at + 8:
        return "fragment_truncated"
    head = frame[frag_at : frag_at + 8]
    off_m = (head[2] << 8) | head[3]
    key = b"\x06" + frame[ip_start + 8 : ip_start + 40] + head[4:8]  # addresses, identification
    return Fragment(6, key, frame[ip_start:frag_at], off_m & 0xFFF8, bool(off_m & 1),
                    frame[frag_at + 8 : ip_start + ip_bytes], head[0], announced_at - ip_start)


def _rebuild(first: Fragment, payload: bytes) -> bytes:
    """The datagram as one unfragmented IP packet."""
    header = bytearray(first.header)
    if first.version == 4:
        struct.pack_into(">H", header, 2, len(header) + len(payload))
        struct.pack_into(">H", header, 6, 0)  # no more fragments, offset 0
        return bytes(header) + payload
    header[first.next_header_at] = first.next_header  # the fragment header is gone
    struct.pack_into(">H", header, 4, len(header) - 40 + len(payload))
    return bytes(header) + payload


def decode_reassembled(fragment: Fragment, fragments: Defragmenter, ts_ns: int,
                       decode: Callable[[bytes, int], tuple | str | Fragment]) -> tuple[tuple, bytes] | str | None:
    """Feed a fragment; when it completes a datagram, the datagram decoded by ``decode`` (as raw IP,
    with the fragment's VLAN id) and its L4 payload; a skip reason; or None while incomplete."""
    packet = fragments.add(fragment, ts_ns)
    if packet is None:
        return None
    decoded = decode(packet, LINKTYPE_RAW)
    if not isinstance(decoded, tuple):  # cannot be a fragment again: offsets and flags are cleared
        return decoded if isinstance(decoded, str) else "fragment_bad"
    at, length = decoded[9], decoded[10]
    return (*decoded[:11], fragment.vlan_id), packet[at : at + length]

