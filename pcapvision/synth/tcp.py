"""TCP connections as a capture at the client host sees them: handshake, segments, ACKs, teardown.

The capture point is the client (one pcap per simulated host), so client packets carry their
send time and server packets their arrival time; a server's reply to data the client sent at
``t`` is captured at ``t + RTT + think time``. Segments are cut at the smaller MSS of the two
hosts and sent in slow-start rounds (10 segments, doubling each RTT, capped). Receivers ACK
every second segment, at once on a gap or a filled gap, and otherwise after a 40 ms delayed-ACK
timer unless their own data carries the ACK first. A segment can be lost (retransmitted one RTT
later, or after an RTO when no later segment exposes the gap) or reordered (captured after its
successor), at rates given per connection. The SYN sender also sends the first payload byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pcapvision.synth.wire import Direction, tcp_syn_options

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT, SERVER = 0, 1

_NS = 1_000_000_000
_DELAYED_ACK_S = 0.040
_MIN_RTO_S = 0.200
_INITIAL_CWND = 10
_MAX_CWND = 64
_STACK_DELAY_S = 30e-6  # a host's own turnaround for an immediate ACK


@dataclass
class Peer:
    """One end of a TCP connection: addressing, MSS, receive window, link rate."""

    direction: Direction  # headers of the packets this peer sends
    port: int
    mss: int
    window: int  # the raw 16-bit window field it advertises after the handshake
    window_scale: int
    rate_bps: float  # how fast it puts bytes on its link (serialization delay)
    isn: int
    snd_nxt: int = 0
    rcv_nxt: int = 0
    cwnd: int = _INITIAL_CWND
    pending_ack_s: float | None = None  # a delayed ACK that will fire at this capture time
    sent_payload: bytearray = field(default_factory=bytearray)


class TcpConnection:
    """Simulates one connection, appending ``(timestamp_ns, frame)`` packets to ``sink``.

    Times are seconds on the host's capture timeline. Call :meth:`open` (or :meth:`probe`),
    then :meth:`send` for each message, then :meth:`close`.
    """

    def __init__(self, sink: list[tuple[int, bytes]], client: Peer, server: Peer, *, rtt_s: float,
                 rng: np.random.Generator, loss_rate: float = 0.0, reorder_rate: float = 0.0,
                 epoch_ns: int = 0) -> None:
        self.sink = sink
        self.peers = (client, server)
        self.rtt_s = rtt_s
        self.rng = rng
        self.loss_rate = loss_rate
        self.reorder_rate = reorder_rate
        self.epoch_ns = epoch_ns
        self.mss = min(client.mss, server.mss)
        # Earliest capture time at which each side can put its next data on the wire.
        self.ready_s = [0.0, 0.0]
        self.last_s = 0.0
        self.packets = 0
        self.wire_bytes = 0  # frame bytes (Ethernet header included) of every packet emitted

    # --- packet emission ---------------------------------------------------------------------
    def _emit(self, side: int, t_s: float, flags: int, payload: bytes = b"", *, seq: int | None = None,
              options: bytes = b"", window: int | None = None) -> None:
        me, peer = self.peers[side], self.peers[1 - side]
        frame = me.direction.tcp(
            me.port, peer.port, me.snd_nxt if seq is None else seq, me.rcv_nxt if flags & ACK else 0,
            flags, me.window if window is None else window, payload, options,
        )
        self.sink.append((self.epoch_ns + int(round(t_s * _NS)), frame))
        self.packets += 1
        self.wire_bytes += len(frame)
        self.last_s = max(self.last_s, t_s)

    def _flush_delayed_ack(self, side: int, before_s: float) -> None:
        """Fire ``side``'s delayed ACK if its timer expires before ``before_s``; else let data carry it."""
        peer = self.peers[side]
        if peer.pending_ack_s is not None:
            if peer.pending_ack_s <= before_s:
                self._emit(side, peer.pending_ack_s, ACK)
            peer.pending_ack_s = None

    def _flush_pending_acks(self, side: int, start_s: float) -> None:
        # The sender's own pending ACK rides on its data unless the timer fires first; the peer's
        # fires unless the new data reaches it (and is ACKed) before the timer.
        self._flush_delayed_ack(side, start_s)
        self._flush_delayed_ack(1 - side, start_s + (self.rtt_s if side == CLIENT else 0.0))

    # --- connection set-up -------------------------------------------------------------------
    def open(self, t_s: float) -> None:
        """Three-way handshake started by the client at ``t_s``."""
        client, server = self.peers
        client.snd_nxt = client.isn
        server.snd_nxt = server.isn
        self._emit(CLIENT, t_s, SYN, options=tcp_syn_options(client.mss, client.window_scale), window=64240)
        client.snd_nxt += 1
        server.rcv_nxt = client.snd_nxt
        t_synack = t_s + self.rtt_s
        self._emit(SERVER, t_synack, SYN | ACK, options=tcp_syn_options(server.mss, server.window_scale),
                   window=65535)
        server.snd_nxt += 1
        client.rcv_nxt = server.snd_nxt
        t_ack = t_synack + _STACK_DELAY_S
        self._emit(CLIENT, t_ack, ACK)
        self.ready_s = [t_ack + _STACK_DELAY_S, t_ack + self.rtt_s]

    def probe(self, t_s: float, outcome: str) -> None:
        """A scan probe: SYN answered by RST (``closed``), by SYN-ACK then RST (``open``), or by
        nothing, with the SYN retried after 1 s (``filtered``)."""
        client, server = self.peers
        client.snd_nxt = client.isn
        server.snd_nxt = server.isn
        syn_options = tcp_syn_options(client.mss, client.window_scale)
        self._emit(CLIENT, t_s, SYN, options=syn_options, window=1024)
        if outcome == "filtered":
            self._emit(CLIENT, t_s + 1.0, SYN, options=syn_options, window=1024)
            return
        client.snd_nxt += 1
        server.rcv_nxt = client.snd_nxt
        if outcome == "closed":
            server.snd_nxt = 0
            self._emit(SERVER, t_s + self.rtt_s, RST | ACK, window=0)
            return
        self._emit(SERVER, t_s + self.rtt_s, SYN | ACK, options=tcp_syn_options(server.mss, server.window_scale),
                   window=65535)
        server.snd_nxt += 1
        client.rcv_nxt = server.snd_nxt
        self._emit(CLIENT, t_s + self.rtt_s + _STACK_DELAY_S, RST, window=0)

    # --- data --------------------------------------------------------------------------------
    def send(self, side: int, data: bytes, delay_s: float = 0.0) -> None:
        """``side`` writes ``data`` ``delay_s`` after it is ready (its last data, or the peer's)."""
        if not data:
            return
        me = self.peers[side]
        start = self.ready_s[side] + delay_s
        self._flush_pending_acks(side, start)
        seg_time = 8 * (self.mss + 54) / me.rate_bps
        base_seq = me.snd_nxt
        transmissions: list[tuple[float, int, bytes]] = []  # (capture time, seq, payload) as captured
        arrivals: list[tuple[float, int, bytes]] = []  # at the receiver, in capture time of its ACKs
        offsets = list(range(0, len(data), self.mss))
        t_round = start
        i = 0
        last_index = len(offsets) - 1
        while i < len(offsets):
            burst = offsets[i : i + me.cwnd]
            for k, off in enumerate(burst):
                payload = bytes(data[off : off + self.mss])
                seq = base_seq + off
                t = t_round + k * seg_time
                index = i + k
                lost = self.loss_rate > 0 and self.rng.random() < self.loss_rate
                reordered = (not lost and self.reorder_rate > 0 and index < last_index
                             and self.rng.random() < self.reorder_rate)
                if reordered:
                    t += 1.5 * seg_time + 20e-6
                # The client's lost segments were captured before the loss; the server's were not.
                if side == CLIENT or not lost:
                    transmissions.append((t, seq, payload))
                if not lost:
                    arrivals.append((t + (self.rtt_s / 2 if side == CLIENT else 0.0), seq, payload))
                else:
                    # Fast retransmit after three duplicate ACKs when later segments expose the gap
                    # (plus the sender's reaction time), else a retransmission timeout.
                    if index + 3 <= last_index:
                        wait = 1.2 * self.rtt_s + 4 * seg_time + 0.0005
                    else:
                        wait = max(_MIN_RTO_S, 2 * self.rtt_s)
                    transmissions.append((t + wait, seq, payload))
                    arrivals.append((t + wait + (self.rtt_s / 2 if side == CLIENT else 0.0), seq, payload))
            i += len(burst)
            t_round += self.rtt_s + len(burst) * seg_time
            me.cwnd = min(_MAX_CWND, me.cwnd * 2)
        last_flag_seq = base_seq + offsets[-1]
        for t, seq, payload in transmissions:
            flags = ACK | (PSH if seq == last_flag_seq else 0)
            self._emit(side, t, flags, payload, seq=seq)
        me.snd_nxt = base_seq + len(data)
        me.sent_payload += data
        done = self._receive(1 - side, sorted(arrivals, key=lambda a: a[0]))
        if side == CLIENT:
            self.ready_s[CLIENT] = max(self.ready_s[CLIENT], max(t for t, _, _ in transmissions) + _STACK_DELAY_S)
            self.ready_s[SERVER] = max(self.ready_s[SERVER], done + self.rtt_s / 2)
        else:
            end = max(t for t, _, _ in transmissions)
            self.ready_s[SERVER] = max(self.ready_s[SERVER], end)
            self.ready_s[CLIENT] = max(self.ready_s[CLIENT], done + _STACK_DELAY_S)

    def _receive(self, side: int, arrivals: list[tuple[float, int, bytes]]) -> float:
        """``side`` receives segments; emits its ACKs. Returns when the last byte arrived
        (capture time at the client; at the server, the time its ACK would be captured minus RTT/2)."""
        me = self.peers[side]
        ack_delay = self.rtt_s / 2 if side == SERVER else _STACK_DELAY_S  # receive -> ACK captured
        out_of_order: dict[int, int] = {}
        unacked = 0
        last = 0.0
        for t, seq, payload in arrivals:
            last = max(last, t)
            end = seq + len(payload)
            if seq == me.rcv_nxt:
                me.rcv_nxt = end
                filled = bool(out_of_order)
                while me.rcv_nxt in out_of_order:
                    me.rcv_nxt = out_of_order.pop(me.rcv_nxt)
                unacked += 1
                if filled or unacked >= 2:
                    self._emit(side, t + ack_delay, ACK)
                    unacked = 0
            elif seq > me.rcv_nxt:
                out_of_order[seq] = max(end, out_of_order.get(seq, end))
                self._emit(side, t + ack_delay, ACK)  # duplicate ACK
            else:
                self._emit(side, t + ack_delay, ACK)
        me.pending_ack_s = last + ack_delay + _DELAYED_ACK_S if unacked else None
        return last

    # --- teardown ----------------------------------------------------------------------------
    def close(self, side: int, how: str, delay_s: float = 0.0) -> None:
        """``side`` ends the connection ``delay_s`` after it is ready: ``fin`` (both FIN, last ACK)
        or ``rst``."""
        start = self.ready_s[side] + delay_s
        self._flush_pending_acks(side, start)
        me, peer = self.peers[side], self.peers[1 - side]
        if how == "rst":
            self._emit(side, start, RST | ACK)
            return
        self._emit(side, start, FIN | ACK)
        me.snd_nxt += 1
        peer.rcv_nxt = me.snd_nxt
        # The peer answers with its own FIN at once; the closer sends the last ACK.
        t_peer = start + (self.rtt_s if side == CLIENT else _STACK_DELAY_S)
        self._emit(1 - side, t_peer, FIN | ACK)
        peer.snd_nxt += 1
        me.rcv_nxt = peer.snd_nxt
        self._emit(side, t_peer + (_STACK_DELAY_S if side == CLIENT else self.rtt_s), ACK)
