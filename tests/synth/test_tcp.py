"""The TCP simulator: handshake, sequence/ack numbers, loss and reordering, teardown."""

from __future__ import annotations

import dpkt
import numpy as np
import pytest

from pcapvision.synth.tcp import ACK, CLIENT, FIN, PSH, RST, SERVER, SYN, Peer, TcpConnection
from pcapvision.synth.wire import Direction, pack_ip

C_MAC, S_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def _connection(sink, *, loss=0.0, reorder=0.0, seed=0, mss=(1460, 1400)):
    up = Direction(C_MAC, S_MAC, pack_ip("10.0.0.2"), pack_ip("203.0.113.9"), 64)
    down = Direction(S_MAC, C_MAC, pack_ip("203.0.113.9"), pack_ip("10.0.0.2"), 51)
    client = Peer(up, 50000, mss[0], 1000, 8, 100e6, isn=0xFFFFFF00)  # wraps around 2**32
    server = Peer(down, 443, mss[1], 2000, 8, 1e9, isn=12345)
    return TcpConnection(sink, client, server, rtt_s=0.05, rng=np.random.default_rng(seed), loss_rate=loss,
                         reorder_rate=reorder)


def _decode(sink):
    out = []
    for ts, frame in sink:
        tcp = dpkt.ethernet.Ethernet(frame).data.data
        side = CLIENT if tcp.sport == 50000 else SERVER
        out.append((ts, side, tcp))
    return out


def _reassemble(packets, side, isn):
    """Bytes by sequence number (no byte twice); asserts overlapping copies agree."""
    data: dict[int, int] = {}
    for _, s, tcp in packets:
        if s != side or not tcp.data:
            continue
        offset = (tcp.seq - isn - 1) % (1 << 32)
        for i, byte in enumerate(tcp.data):
            assert data.setdefault(offset + i, byte) == byte
    assert sorted(data) == list(range(len(data)))
    return bytes(data[i] for i in range(len(data)))


@pytest.mark.parametrize(("loss", "reorder", "seed"), [(0.0, 0.0, 0), (0.2, 0.0, 1), (0.0, 0.2, 2), (0.15, 0.15, 3)])
def test_streams_reassemble_exactly_under_loss_and_reordering(loss: float, reorder: float, seed: int) -> None:
    sink: list = []
    conn = _connection(sink, loss=loss, reorder=reorder, seed=seed)
    rng = np.random.default_rng(seed)
    up, down = rng.bytes(30_000), rng.bytes(90_000)
    conn.open(0.0)
    conn.send(CLIENT, up[:517], 0.0)
    conn.send(SERVER, down[:3000], 0.002)
    conn.send(CLIENT, up[517:], 0.001)
    conn.send(SERVER, down[3000:], 0.01)
    conn.close(CLIENT, "fin", 0.5)
    packets = _decode(sorted(sink, key=lambda r: r[0]))
    assert _reassemble(packets, CLIENT, 0xFFFFFF00) == up
    assert _reassemble(packets, SERVER, 12345) == down
    flags = [(side, tcp.flags) for _, side, tcp in packets]
    assert flags[:3] == [(CLIENT, SYN), (SERVER, SYN | ACK), (CLIENT, ACK)]
    assert flags[-3:] == [(CLIENT, FIN | ACK), (SERVER, FIN | ACK), (CLIENT, ACK)]
    # Every ACK acknowledges only bytes the peer has sent, and the last ones everything (+FIN).
    sent_end = {CLIENT: (0xFFFFFF00 + 1 + len(up)) % (1 << 32), SERVER: 12345 + 1 + len(down)}
    for _, side, tcp in packets:
        if tcp.flags & ACK:
            peer_isn = 12345 if side == CLIENT else 0xFFFFFF00
            assert 0 <= (tcp.ack - peer_isn) % (1 << 32) <= len(down if side == CLIENT else up) + 2
    assert packets[-1][2].ack == (sent_end[SERVER] + 1) % (1 << 32)
    # Segments never exceed the smaller MSS; the server's data comes an RTT after the request.
    assert max(len(tcp.data) for _, _, tcp in packets) == 1400
    if loss:
        assert sum(1 for _, _, tcp in packets if tcp.data) > -(-len(up) // 1400) + -(-len(down) // 1400) - 10


def test_timing_follows_rtt_and_psh_marks_the_end_of_each_write() -> None:
    sink: list = []
    conn = _connection(sink)
    conn.open(1.0)
    conn.send(CLIENT, b"q" * 300, 0.0)
    conn.send(SERVER, b"r" * 5000, 0.010)
    packets = _decode(sorted(sink, key=lambda r: r[0]))
    request = next(p for p in packets if p[1] == CLIENT and p[2].data)
    response = [p for p in packets if p[1] == SERVER and p[2].data]
    assert request[2].flags & PSH
    gap_s = (response[0][0] - request[0]) / 1e9
    assert 0.06 - 1e-6 <= gap_s < 0.061  # one RTT plus the server's think time
    assert [bool(p[2].flags & PSH) for p in response] == [False] * (len(response) - 1) + [True]
    assert (packets[1][0] - packets[0][0]) / 1e9 == pytest.approx(0.05)  # SYN -> SYN/ACK


def test_rst_teardown_and_scan_probes() -> None:
    sink: list = []
    conn = _connection(sink)
    conn.open(0.0)
    conn.send(CLIENT, b"x" * 100)
    conn.close(SERVER, "rst", 0.1)
    assert _decode(sink)[-1][2].flags == RST | ACK and _decode(sink)[-1][1] == SERVER
    for outcome, expected in [("closed", [(CLIENT, SYN), (SERVER, RST | ACK)]),
                              ("open", [(CLIENT, SYN), (SERVER, SYN | ACK), (CLIENT, RST)]),
                              ("filtered", [(CLIENT, SYN), (CLIENT, SYN)])]:
        sink = []
        _connection(sink).probe(0.0, outcome)
        assert [(side, tcp.flags) for _, side, tcp in _decode(sink)] == expected
        assert all(not tcp.data for _, _, tcp in _decode(sink))
