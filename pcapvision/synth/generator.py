"""Plan hosts and their traffic from a seed, run every connection through real TLS, write pcaps.

``generate`` makes one pcap per simulated host (``normal-hostNN.pcap``, ``infected-hostNN.pcap``),
a ``labels.csv`` in the rule format of ``pcapvision ingest --labels`` (one row per flow, keyed by
file name and 5-tuple) and a ``synth.json`` manifest (parameters, versions, per-file counts).
Infected hosts carry benign background traffic beside their malicious families, as real ones do.
"""

from __future__ import annotations

import csv
import ipaddress
import io
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pcapvision.console import progress
from pcapvision.errors import ParameterError
from pcapvision.io import atomic_path, make_metadata, sha256_file, write_json_atomic, write_text_atomic
from pcapvision.synth import dns
from pcapvision.synth.profiles import (
    BROWSER_HELLOS,
    DEFAULT_MIX,
    DIFFICULTIES,
    DNS_FAMILY,
    FAMILIES,
    LIBRARY_HELLOS,
    MALICIOUS,
    PLANNERS,
    ConnectionPlan,
    Host,
    PlanContext,
    Server,
)
from pcapvision.synth.tcp import CLIENT, SERVER, Peer, TcpConnection
from pcapvision.synth.tls import SERVER_TO_CLIENT, TestPki, TlsFactory
from pcapvision.synth.wire import Direction, pack_ip, write_pcap
from pcapvision.validation import check_choice, check_int, check_number, check_positive_int

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("file", "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "label", "family", "rule_id")
# Simulated captures start on a fixed date (plus a seeded offset), never "now": seeds reproduce.
_EPOCH_S = 1772409600  # 2026-03-02T00:00:00Z
_HORIZON_S = 1200.0
_PAYLOAD_PREFIX_BYTES = 8192  # per direction, kept in FlowTruth for round-trip checks
_BACKGROUND_WEIGHT = 0.35  # an infected host's share of benign activity relative to a clean host


@dataclass(frozen=True)
class FlowTruth:
    """Ground truth of one generated flow (what labels.csv says, plus what tests compare)."""

    file: str
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    protocol: str  # "tcp" or "udp"
    label: str
    family: str
    sni: str | None
    first_seen_ns: int
    packets: int
    frame_bytes: int  # Ethernet frame bytes of all its packets
    client_payload: bytes  # first bytes the initiator sent (TLS records exactly as emitted)
    server_payload: bytes


@dataclass
class SynthSummary:
    """What :func:`generate` wrote and how long it took."""

    output_dir: Path
    files: list[Path]
    labels_csv: Path
    flows: int
    payload_flows: int
    packets: int
    bytes: int
    seconds: float
    flows_by_family: dict[str, int] = field(default_factory=dict)
    flows_by_label: dict[str, int] = field(default_factory=dict)
    truths: list[FlowTruth] = field(default_factory=list, repr=False)

    def format(self) -> str:
        """Human summary for the CLI."""
        rate = self.flows / self.seconds if self.seconds else float("inf")
        lines = [
            f"wrote {len(self.files)} captures and {self.labels_csv.name} to {self.output_dir}",
            f"flows: {self.flows} ({self.payload_flows} with payload)  packets: {self.packets}  "
            f"bytes: {self.bytes / 1e6:.2f} MB  seconds: {self.seconds:.1f}  ({rate:.0f} flows/s)",
            "labels: " + ", ".join(f"{k}={v}" for k, v in sorted(self.flows_by_label.items())),
            "families: " + ", ".join(f"{k}={v}" for k, v in sorted(self.flows_by_family.items())),
        ]
        return "\n".join(lines)


def parse_mix(text: str) -> dict[str, float]:
    """``"c2-beacon=2,web-browsing=1"`` -> weights (families not named keep their default)."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, weight = item.partition("=")
        if not sep:
            raise ParameterError(f"The 'mix' parameter must be FAMILY=WEIGHT pairs. Got {item!r} instead.")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ParameterError(f"The 'mix' parameter must have numeric weights. Got {item!r} instead.") from None
    return mix


def _resolve_mix(mix: dict[str, float] | None) -> dict[str, float]:
    weights = dict(DEFAULT_MIX)
    for name, weight in (mix or {}).items():
        check_choice("mix", name, FAMILIES)
        weights[name] = check_number(f"mix[{name}]", weight, min_value=0.0)
    total = sum(weights.values())
    if not math.isfinite(total):
        raise ParameterError(f"The 'mix' parameter must have weights whose sum is finite. Got {mix!r} instead.")
    if total <= 0:
        raise ParameterError(f"The 'mix' parameter must give some family a positive weight. Got {mix!r} instead.")
    return {name: w / total for name, w in weights.items()}


# --- hosts -----------------------------------------------------------------------------------------
def _mac(rng: np.random.Generator) -> bytes:
    raw = bytearray(rng.bytes(6))
    raw[0] = (raw[0] | 0x02) & 0xFE  # locally administered, unicast
    return bytes(raw)


def _make_host(rng: np.random.Generator, name: str, infected: bool) -> Host:
    if rng.random() < 0.5:
        subnet = f"192.168.{int(rng.integers(0, 255))}"
    else:
        subnet = f"10.{int(rng.integers(0, 255))}.{int(rng.integers(0, 255))}"
    ipv4 = f"{subnet}.{int(rng.integers(2, 250))}"
    dual_stack = rng.random() < 0.3
    prefix = f"2001:db8:{int(rng.integers(0x100, 0xffff)):x}:{int(rng.integers(0, 0xffff)):x}"
    windows = rng.random() < 0.5
    mtu = [1500, 1500, 1500, 1492, 1400][int(rng.integers(5))]
    return Host(
        name=name,
        infected=infected,
        mac=_mac(rng),
        gateway_mac=_mac(rng),
        ipv4=ipv4,
        ipv6=f"{prefix}::{int(rng.integers(0x1000, 0xffff)):x}" if dual_stack else None,
        resolver_v4=f"{subnet}.1",
        resolver_v6=f"{prefix}::1" if dual_stack else None,
        mss=mtu - 40,
        ttl=128 if windows else 64,
        window=int(rng.integers(500, 2053)),
        window_scale=8 if windows else 7,
        rate_bps=float(rng.uniform(20e6, 500e6)),
        access_rtt_s=float(rng.uniform(0.001, 0.02)),
        browser=BROWSER_HELLOS[int(rng.integers(len(BROWSER_HELLOS)))],
        app_library=LIBRARY_HELLOS[int(rng.integers(len(LIBRARY_HELLOS)))],
    )


@dataclass
class HostPlan:
    host: Host
    families: tuple[str, ...]  # malicious families this host is infected with
    connections: list[ConnectionPlan] = field(default_factory=list)


def plan_traffic(flows: int, seed: int, difficulty: str, mix: dict[str, float] | None = None,
                 max_flow_kib: int = 64, hosts_per_class: int | None = None) -> list[HostPlan]:
    """Hosts and every connection they make: a pure function of the arguments (no TLS, no I/O)."""
    preset = DIFFICULTIES[difficulty]
    weights = _resolve_mix(mix)
    rng = np.random.default_rng([seed, 0x5EED])
    per_class = hosts_per_class or max(2, min(50, round(flows / 300)))
    normal_hosts = [HostPlan(_make_host(rng, f"normal-host{i:02d}", False), ()) for i in range(per_class)]
    malicious_families = [name for name, fam in FAMILIES.items() if fam.label == MALICIOUS and weights[name] > 0]
    # Each infected host runs k malicious families, k chosen so that every family lives on at
    # least two hosts: a split by host can then hold a family out of neither train nor test.
    m = len(malicious_families)
    k = min(m, max(3, math.ceil(2 * m / per_class))) if m else 0
    infected_hosts = []
    for i in range(per_class):
        mine = tuple(dict.fromkeys(malicious_families[(i * k + j) % m] for j in range(k)))
        infected_hosts.append(HostPlan(_make_host(rng, f"infected-host{i:02d}", True), mine))
    all_hosts = normal_hosts + infected_hosts
    normal_p = np.array([1.0] * len(normal_hosts) + [_BACKGROUND_WEIGHT] * len(infected_hosts))
    normal_p = np.cumsum(normal_p / normal_p.sum())
    servers: dict[str, Server] = {}
    max_flow_bytes = max_flow_kib * 1024
    for family, weight in weights.items():
        target = round(flows * weight)
        if FAMILIES[family].label == MALICIOUS:
            candidates = [h for h in infected_hosts if family in h.families] or infected_hosts
            p = None
        else:
            candidates, p = all_hosts, normal_p
        made = 0
        while made < target:
            if p is None:
                host_plan = candidates[int(rng.integers(len(candidates)))]
            else:  # weighted pick; Generator.choice(p=...) costs ~100x more per call
                host_plan = candidates[min(int(np.searchsorted(p, rng.random(), side="right")), len(candidates) - 1)]
            ctx = PlanContext(rng, host_plan.host, preset, max_flow_bytes, _HORIZON_S, servers)
            plans = PLANNERS[family](ctx, target - made)
            host_plan.connections.extend(plans)
            made += len(plans)
    for host_plan in all_hosts:
        host_plan.connections.sort(key=lambda c: c.start_s)
    return all_hosts


# --- running a host --------------------------------------------------------------------------------
class _HostRunner:
    """Turns one host's plans into packets and ground truth."""

    def __init__(self, plan: HostPlan, index: int, tls: TlsFactory, loss_rate: float, reorder_rate: float,
                 seed: int, epoch_ns: int, file_name: str) -> None:
        self.plan = plan
        self.host = plan.host
        self.tls = tls
        self.loss_rate, self.reorder_rate = loss_rate, reorder_rate
        # Per-host stream for ports, IP ids and DNS; each connection has its own (see run).
        self.rng = np.random.default_rng([seed, 0xC0FFEE, index])
        self.seed, self.index = seed, index
        self._connections = 0
        self.epoch_ns = epoch_ns
        self.file_name = file_name
        self.packets: list[tuple[int, bytes]] = []
        self.truths: list[FlowTruth] = []
        self._next_port = int(self.rng.integers(49152, 60000))
        self._used_ports: set[int] = set()
        self._resolved: set[tuple[str, int]] = set()

    def _ephemeral_port(self) -> int:
        if len(self._used_ports) >= 16384:
            # Only a host with more connections than ephemeral ports gets here: reuse ports, as
            # stacks do once TIME_WAIT is over (labels.csv then lists the 5-tuple more than once).
            self._used_ports.clear()
        while True:
            self._next_port = 49152 + (self._next_port - 49152 + int(self.rng.integers(1, 4))) % 16384
            if self._next_port not in self._used_ports:
                self._used_ports.add(self._next_port)
                return self._next_port

    def _udp_port(self) -> int:
        while True:
            port = int(self.rng.integers(1024, 65536))
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port

    def _directions(self, ipv6: bool, client_ip: str, server_ip: str, server_ttl: int) -> tuple[Direction, Direction]:
        up = Direction(self.host.mac, self.host.gateway_mac, pack_ip(client_ip), pack_ip(server_ip), self.host.ttl,
                       ip_id=int(self.rng.integers(0, 65536)))
        down = Direction(self.host.gateway_mac, self.host.mac, pack_ip(server_ip), pack_ip(client_ip), server_ttl,
                         ip_id=int(self.rng.integers(0, 65536)))
        return up, down

    def _lookup(self, name: str, ipv6: bool, answer: str | None, t_s: float, label: str) -> None:
        """One DNS query/response flow ending just before ``t_s`` (skipped when already cached)."""
        qtype = dns.QTYPE_AAAA if ipv6 else dns.QTYPE_A
        if answer is not None and (name, qtype) in self._resolved:
            return
        self._resolved.add((name, qtype))
        client_ip = self.host.ipv6 if ipv6 else self.host.ipv4
        resolver = self.host.resolver_v6 if ipv6 else self.host.resolver_v4
        assert client_ip is not None and resolver is not None
        up, down = self._directions(ipv6, client_ip, resolver, 64)
        port, txid = self._udp_port(), int(self.rng.integers(0, 65536))
        rtt = float(self.rng.uniform(0.002, 0.04)) if answer is not None else float(self.rng.uniform(0.02, 0.2))
        t_query = t_s - rtt - 0.001
        query = dns.query(txid, name, qtype)
        reply = dns.response(txid, name, qtype, [answer] if answer else [], int(self.rng.integers(30, 3600)))
        self.packets.append((self.epoch_ns + round(t_query * 1e9), up.udp(port, 53, query)))
        self.packets.append((self.epoch_ns + round((t_query + rtt) * 1e9), down.udp(53, port, reply)))
        frame_bytes = len(self.packets[-1][1]) + len(self.packets[-2][1])
        self.truths.append(FlowTruth(self.file_name, client_ip, resolver, port, 53, "udp", label, DNS_FAMILY, None,
                                     self.epoch_ns + round(t_query * 1e9), 2, frame_bytes, query, reply))

    def run(self, conn: ConnectionPlan) -> None:
        ipv6 = conn.use_ipv6 and self.host.ipv6 is not None and conn.server.ipv6 is not None
        client_ip = self.host.ipv6 if ipv6 else self.host.ipv4
        server_ip = conn.server.ipv6 if ipv6 else conn.server.ipv4
        assert client_ip is not None and server_ip is not None
        t = conn.start_s
        for failed in conn.nxdomain_lookups:
            self._lookup(failed, False, None, t, conn.label)
            t += 0.3
        if conn.lookup is not None:
            self._lookup(conn.lookup, ipv6, server_ip, t, conn.label)
        # Its own stream per connection: a TLS flight one byte longer (signatures are not seeded)
        # may add a segment and a loss draw, and that must not shift every later connection.
        self._connections += 1
        rng = np.random.default_rng([self.seed, 0x7C9, self.index, self._connections])
        hops = int(rng.integers(6, 24))
        up, down = self._directions(ipv6, client_ip, server_ip, (64 if rng.random() < 0.7 else 128) - hops)
        ip_overhead = 20 if ipv6 else 0
        if conn.client_port is not None:  # a scanner's fixed source port
            client_port = conn.client_port
            self._used_ports.add(client_port)
        else:
            client_port = self._ephemeral_port()
        client = Peer(up, client_port, self.host.mss - ip_overhead, self.host.window, self.host.window_scale,
                      self.host.rate_bps, int(rng.integers(0, 1 << 32)))
        server = Peer(down, conn.server.port, (1460, 1440, 1380, 1360)[int(rng.integers(4))] - ip_overhead,
                      int(rng.integers(250, 2049)), 8, 1e9, int(rng.integers(0, 1 << 32)))
        rtt = (self.host.access_rtt_s + conn.server.distance_s) * float(rng.uniform(0.9, 1.15))
        tcp = TcpConnection(self.packets, client, server, rtt_s=rtt, rng=rng, loss_rate=self.loss_rate,
                            reorder_rate=self.reorder_rate, epoch_ns=self.epoch_ns)
        first_ns = self.epoch_ns + round(t * 1e9)
        if conn.probe is not None:
            tcp.probe(t, conn.probe)
        else:
            self._run_tls(conn, tcp, t)
        self.truths.append(FlowTruth(
            self.file_name, client_ip, server_ip, client_port, conn.server.port, "tcp", conn.label, conn.family,
            _sni_on_wire(conn.sni), first_ns, tcp.packets, tcp.wire_bytes,
            bytes(client.sent_payload[:_PAYLOAD_PREFIX_BYTES]), bytes(server.sent_payload[:_PAYLOAD_PREFIX_BYTES])))

    def _run_tls(self, conn: ConnectionPlan, tcp: TcpConnection, t: float) -> None:
        rng = tcp.rng
        assert conn.client_hello is not None
        tcp.open(t)
        server_shape = conn.server.shape
        if conn.client_hello.min_version > server_shape.max_version:
            # A server that stops at TLS 1.2 cannot talk to a 1.3-only client; real pairs that meet agree.
            server_shape = replace(server_shape, max_version=conn.client_hello.min_version)
        session = self.tls.session(conn.client_hello, server_shape, conn.server.cert_name, conn.sni)
        flights = session.handshake()
        held: bytes = b""
        # TLS 1.3 servers send tickets after the client's Finished; the client does not wait for
        # them, so they travel with the server's first data.
        if session.version == "TLSv1.3" and flights[-1][0] == SERVER_TO_CLIENT and conn.messages:
            held = flights.pop()[1]
        for direction, data in flights:
            # Server flights cost a signature; client flights a key exchange: both sub-millisecond.
            low, high = (0.0005, 0.003) if direction == SERVER_TO_CLIENT else (0.0001, 0.001)
            delay = float(rng.uniform(low, high))
            tcp.send(SERVER if direction == SERVER_TO_CLIENT else CLIENT, data, delay)
        for message in conn.messages:
            wire = session.send(message.direction, message.size)
            if message.direction == SERVER_TO_CLIENT and held:
                wire, held = held + wire, b""
            tcp.send(SERVER if message.direction == SERVER_TO_CLIENT else CLIENT, wire, message.delay_s)
        if held:
            tcp.send(SERVER, held, 0.0)
        side = SERVER if conn.close_by == SERVER_TO_CLIENT else CLIENT
        if conn.close_notify:
            tcp.send(side, session.close(conn.close_by), conn.close_delay_s)
            tcp.close(side, conn.close_how, 0.0001)
        else:
            tcp.close(side, conn.close_how, conn.close_delay_s)


def _sni_on_wire(server_hostname: str | None) -> str | None:
    # Python's ssl sends no SNI for an IP literal, as RFC 6066 requires.
    if server_hostname is None:
        return None
    try:
        ipaddress.ip_address(server_hostname)
    except ValueError:
        return server_hostname
    return None


def _labels_csv(truths: list[FlowTruth]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for t in truths:
        writer.writerow([t.file, t.src_ip, t.dst_ip, t.src_port, t.dst_port, t.protocol, t.label, t.family,
                         f"synth:{t.family}"])
    return buffer.getvalue()


def generate(output_dir: str | os.PathLike[str], *, flows: int = 2000, seed: int = 0, difficulty: str = "realistic",
             mix: dict[str, float] | None = None, max_flow_kib: int = 64, hosts_per_class: int | None = None,
             loss_rate: float | None = None, reorder_rate: float | None = None, quiet: bool = False) -> SynthSummary:
    """Generate labelled TLS traffic into ``output_dir``: one pcap per host, labels.csv, synth.json.

    ``flows`` counts TCP connections (port-scan probes included); DNS lookups made before them
    are extra flows. ``mix`` re-weights families (``{"c2-beacon": 2}``; others keep their
    defaults, 0 drops one). ``max_flow_kib`` caps each flow's application bytes.
    ``loss_rate``/``reorder_rate`` (per data segment) override the difficulty preset's.
    """
    flows = check_positive_int("flows", flows)
    seed = check_int("seed", seed, min_value=0)
    difficulty = check_choice("difficulty", difficulty, DIFFICULTIES)
    max_flow_kib = check_int("max_flow_kib", max_flow_kib, min_value=1)
    if hosts_per_class is not None:
        hosts_per_class = check_positive_int("hosts_per_class", hosts_per_class)
    preset = DIFFICULTIES[difficulty]
    loss_rate = preset.loss_rate if loss_rate is None else check_number("loss_rate", loss_rate, min_value=0.0,
                                                                         max_value=0.5)
    reorder_rate = preset.reorder_rate if reorder_rate is None else check_number(
        "reorder_rate", reorder_rate, min_value=0.0, max_value=0.5)
    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    host_plans = plan_traffic(flows, seed, difficulty, mix, max_flow_kib, hosts_per_class)
    epoch_ns = (_EPOCH_S + int(np.random.default_rng([seed, 0xDA7E]).integers(0, 180)) * 86400) * 1_000_000_000
    total = sum(len(h.connections) for h in host_plans)
    files: list[Path] = []
    truths: list[FlowTruth] = []
    packets = size = 0
    file_records = []
    with TestPki(seed) as pki, progress(total=total, desc="synth", unit="flow", quiet=quiet or None) as bar:
        tls = TlsFactory(pki)
        for index, host_plan in enumerate(host_plans):
            file_name = f"{host_plan.host.name}.pcap"
            runner = _HostRunner(host_plan, index, tls, loss_rate, reorder_rate, seed, epoch_ns, file_name)
            for conn in host_plan.connections:
                runner.run(conn)
                bar.update(1)
            runner.packets.sort(key=lambda record: record[0])
            path = out / file_name
            with atomic_path(path) as tmp, open(tmp, "wb") as stream:
                count, written = write_pcap(stream, runner.packets)
            files.append(path)
            truths.extend(runner.truths)
            packets += count
            size += written
            file_records.append({"file": file_name, "host": host_plan.host.name, "infected": host_plan.host.infected,
                                 "malicious_families": list(host_plan.families), "flows": len(runner.truths),
                                 "packets": count, "bytes": written, "sha256": sha256_file(path)})
            log.debug("%s: %d flows, %d packets", file_name, len(runner.truths), count)
    labels_path = write_text_atomic(out / "labels.csv", _labels_csv(truths))
    seconds = time.perf_counter() - started
    summary = SynthSummary(
        output_dir=out, files=files, labels_csv=labels_path, flows=len(truths),
        payload_flows=sum(1 for t in truths if t.client_payload or t.server_payload),
        packets=packets, bytes=size, seconds=seconds,
        flows_by_family=dict(Counter(t.family for t in truths)), flows_by_label=dict(Counter(t.label for t in truths)),
        truths=truths,
    )
    params = {"flows": flows, "seed": seed, "difficulty": difficulty, "mix": _resolve_mix(mix),
              "max_flow_kib": max_flow_kib, "hosts_per_class": hosts_per_class, "loss_rate": loss_rate,
              "reorder_rate": reorder_rate}
    write_json_atomic(out / "synth.json", make_metadata(
        "synth", params, files=file_records, flows_by_family=summary.flows_by_family,
        flows_by_label=summary.flows_by_label, note="TLS key material is not seeded: ciphertext differs between runs"))
    log.debug("synth: %d flows, %d packets, %.1f MB in %.1f s", summary.flows, packets, size / 1e6, seconds)
    return summary
