"""A flow's packets read back from its source capture with scapy, and rewritten: one ClientHello's
bytes replaced (with the server's session-id echo), or one TLS record appended as an extra TCP
segment with the later sequence numbers shifted. Each result is a new pcap, checked with scapy's
TLS layer where a handshake must stay consistent. Used by the byte-realizable attack's round trip
and the packet-level distortions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pcapvision.errors import DataContractError


def _endpoints(pkt: Any) -> tuple[str, int, str, int] | None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    if TCP not in pkt:
        return None
    ip = pkt[IP] if IP in pkt else (pkt[IPv6] if IPv6 in pkt else None)
    if ip is None:
        return None
    return str(ip.src), int(pkt[TCP].sport), str(ip.dst), int(pkt[TCP].dport)


def _canonical_ip(address: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(address))


def flow_packets(capture: str | os.PathLike[str], flow: dict[str, Any], direction: int) -> list[tuple[Any, int]]:
    """The flow's TCP packets in capture order, each with 0 (from the sender) or 1 (from its peer)."""
    # The link-layer dissectors register when scapy's layers are imported; a PcapReader opened
    # before that (the first in a process) decodes every frame as Raw and finds no flow.
    import scapy.layers.inet  # noqa: F401
    import scapy.layers.inet6  # noqa: F401
    from scapy.utils import PcapReader

    a = (_canonical_ip(flow["src_ip"]), int(flow["src_port"]))
    b = (_canonical_ip(flow["dst_ip"]), int(flow["dst_port"]))
    sender, receiver = (a, b) if direction == 0 else (b, a)
    packets: list[tuple[Any, int]] = []
    with PcapReader(os.fspath(capture)) as reader:
        for pkt in reader:
            ends = _endpoints(pkt)
            if ends is None:
                continue
            src, dst = (_canonical_ip(ends[0]), ends[1]), (_canonical_ip(ends[2]), ends[3])
            if (src, dst) == (sender, receiver):
                packets.append((pkt, 0))
            elif (src, dst) == (receiver, sender):
                packets.append((pkt, 1))
    if not packets:
        raise DataContractError(f"{capture}: no packet of flow {flow.get('flow_id')} ({a} <-> {b})")
    return packets


def rewrite_client_hello(capture: str | os.PathLike[str], flow: dict[str, Any], new_bytes: dict[int, bytes],
                         output: str | os.PathLike[str], *, echo: tuple[bytes, bytes] | None = None) -> Path:
    """Write ``output``: the flow's packets with bytes of the client's first segment replaced.

    ``new_bytes`` maps a payload offset to the bytes written there; every offset must fall in the
    initiator's first data segment (the one opening the session-order payload). ``echo``:
    ``(old session id, new session id)``: the server's first data segment holding the old id
    (its ServerHello echo) gets the new one in its place.
    """
    from scapy.layers.inet import TCP
    from scapy.utils import wrpcap

    if int(flow.get("protocol", 6)) != 6:
        raise DataContractError(f"{capture}: flow {flow.get('flow_id')} is not TCP")
    packets = flow_packets(capture, flow, 0)
    firsts = [i for i, (p, side) in enumerate(packets) if side == 0 and len(bytes(p[TCP].payload)) > 0]
    if not firsts:
        raise DataContractError(f"{capture}: the client of flow {flow.get('flow_id')} sent no data")
    i = firsts[0]
    payload = bytearray(bytes(packets[i][0][TCP].payload))
    end = max(offset + len(data) for offset, data in new_bytes.items())
    if end > len(payload):
        raise DataContractError(f"{capture}: the ClientHello of flow {flow.get('flow_id')} spans several segments")
    for offset, data in new_bytes.items():
        payload[offset : offset + len(data)] = data
    out = [p for p, _ in packets]
    out[i] = _with_payload(packets[i][0], bytes(payload))
    if echo is not None:
        old_sid, new_sid = echo
        for j, (p, side) in enumerate(packets):
            data = bytes(p[TCP].payload)
            if side == 1 and data:
                if old_sid in data:
                    out[j] = _with_payload(p, data.replace(old_sid, new_sid, 1))
                break  # only the server's first data segment holds the ServerHello
    out_path = Path(output)
    wrpcap(os.fspath(out_path), out)
    return out_path


def _with_payload(pkt: Any, payload: bytes) -> Any:
    """A copy of TCP packet ``pkt`` carrying ``payload`` (same length: checksums recomputed on write)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    new = pkt.copy()
    new[TCP].remove_payload()
    new[TCP].add_payload(Raw(payload))
    del new[TCP].chksum
    if IP in new:
        del new[IP].chksum
    elif IPv6 in new:
        del new[IPv6].plen
    return new


def tls_layer() -> Any:
    """scapy's TLS record layer, without the TCP port 443 binding its import installs.

    Captures here are read and rewritten byte for byte; with the binding, scapy would dissect
    port-443 payloads as TLS and rebuild them differently on write. TLS parsing happens only
    where it is asked for.
    """
    from scapy.layers.inet import TCP
    from scapy.layers.tls.all import TLS
    from scapy.packet import split_layers

    split_layers(TCP, TLS, sport=443)
    split_layers(TCP, TLS, dport=443)
    return TLS


def check_handshake(capture: str | os.PathLike[str], flow: dict[str, Any]) -> tuple[bool, str]:
    """Parse the flow's first client and server data segments with scapy's TLS layer and say
    whether the handshake is consistent: ``(ok, what was found)``.

    Consistent: the client's segment parses as a ClientHello, and a ServerHello (when the server
    sent one) carries either the client's session id (an echo) or one of its own that is not the
    session id the client sent in the original capture (checked by the caller when it matters).
    """
    from scapy.layers.inet import TCP
    from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello

    TLS = tls_layer()
    packets = flow_packets(capture, flow, 0)
    first = {}
    for p, side in packets:
        data = bytes(p[TCP].payload)
        if data and side not in first:
            first[side] = data
    if 0 not in first:
        return False, "the client sent no data"
    try:
        client = TLS(first[0])
        hello = next((m for m in client.msg if isinstance(m, TLSClientHello)), None)
    except Exception as exc:  # scapy raises many types on bytes it cannot dissect
        return False, f"client segment does not parse as TLS ({exc.__class__.__name__})"
    if hello is None:
        return False, "no ClientHello in the client's first segment"
    if 1 not in first:
        return True, "ClientHello parses; the server sent no data"
    try:
        server = TLS(first[1])
        reply = next((m for m in server.msg if isinstance(m, TLSServerHello)), None)
    except Exception as exc:  # same as above
        return False, f"server segment does not parse as TLS ({exc.__class__.__name__})"
    if reply is None:
        return True, "ClientHello parses; no ServerHello in the server's first segment"
    if bytes(reply.sid or b"") == bytes(hello.sid or b""):
        return True, "ClientHello parses; the ServerHello echoes its session id"
    return True, "ClientHello parses; the ServerHello carries a session id of its own"


def append_record_to_flow(capture: str | os.PathLike[str], flow: dict[str, Any], data: bytes,
                          output: str | os.PathLike[str], *, direction: int = 0) -> Path:
    """Write ``output``: the flow's packets from ``capture`` plus one TCP segment carrying ``data``.

    ``flow`` is a flows-table row (``src_ip``/``src_port``/``dst_ip``/``dst_port``). The segment
    goes from the initiator (``direction=0``) or the responder (1) right after the flow's last
    payload-carrying packet; later packets of the sender move up by ``len(data)`` in sequence
    space and the peer's acknowledgements follow. Raises :class:`DataContractError` when the flow
    is not TCP, is not in the capture, or the sender had already closed its side.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    if int(flow.get("protocol", 6)) != 6:
        raise DataContractError(f"{capture}: flow {flow.get('flow_id')} is not TCP: no segment can be appended")
    packets = flow_packets(capture, flow, direction)
    with_data = [i for i, (p, _) in enumerate(packets) if len(bytes(p[TCP].payload)) > 0]
    at = (with_data[-1] if with_data else len(packets) - 1) + 1  # insert before packet `at`
    mine = [p for p, side in packets[:at] if side == 0]
    if not mine:
        raise DataContractError(f"{capture}: the sender of flow {flow.get('flow_id')} sent nothing before the insertion point")
    if any(p[TCP].flags & 0x05 for p in mine):  # FIN or RST already sent: no more data may follow
        raise DataContractError(f"{capture}: the sender of flow {flow.get('flow_id')} already closed its side")
    next_seq = max((p[TCP].seq + len(bytes(p[TCP].payload)) + (1 if p[TCP].flags & 0x02 else 0)) % 2**32 for p in mine)
    last = mine[-1]
    segment = last.copy()
    tcp = segment[TCP]
    tcp.remove_payload()
    tcp.add_payload(Raw(data))
    tcp.seq, tcp.ack, tcp.flags = next_seq, last[TCP].ack, "PA"
    del tcp.chksum
    if IP in segment:
        del segment[IP].len
        del segment[IP].chksum
    elif IPv6 in segment:
        del segment[IPv6].plen
    t_prev = float(packets[at - 1][0].time)
    t_next = float(packets[at][0].time) if at < len(packets) else t_prev + 0.002
    segment.time = t_prev + min(0.001, (t_next - t_prev) / 2)
    out = []
    for i, (pkt, side) in enumerate(packets):
        if i == at:
            out.append(segment)
        if i >= at:
            pkt = pkt.copy()
            if side == 0:
                pkt[TCP].seq = (pkt[TCP].seq + len(data)) % 2**32
            elif pkt[TCP].flags & 0x10:
                pkt[TCP].ack = (pkt[TCP].ack + len(data)) % 2**32
            del pkt[TCP].chksum
        out.append(pkt)
    if at == len(packets):
        out.append(segment)
    # Deleted length and checksum fields are recomputed when wrpcap builds each packet.
    out_path = Path(output)
    wrpcap(os.fspath(out_path), out)
    return out_path


def server_first_bytes(capture: str | os.PathLike[str], flow: dict[str, Any]) -> bytes:
    from scapy.layers.inet import TCP

    return next((bytes(p[TCP].payload) for p, side in flow_packets(capture, flow, 0)
                 if side == 1 and bytes(p[TCP].payload)), b"")


__all__ = ["append_record_to_flow", "check_handshake", "flow_packets", "rewrite_client_hello", "server_first_bytes",
           "tls_layer"]
