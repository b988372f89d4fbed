"""Benchmark of ``pcapvision synth``: generation flows/s and MB/s beside same-run baselines.

Baselines, measured in the same process on the same machine:
  * tls-only: the in-memory TLS sessions alone (handshake, one request/response, close), the
    floor that real TLS imposes on any generator of this kind;
  * frames: the packet encoder (``wire.Direction.tcp``: struct-packed headers, checksums via one
    big-int modulo) against scapy building the same frames layer by layer
    (``Ether()/IP()/TCP()/Raw``, ``bytes()``), which is what the encoder replaced.

    .venv/bin/python bench/synth.py                 # 1500 flows, realistic
    .venv/bin/python bench/synth.py --flows 3000 --repeat 3
    .venv/bin/python bench/synth.py --separability    # + how separable each difficulty is
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dpkt  # noqa: E402

from pcapvision.synth import generate  # noqa: E402
from pcapvision.synth.profiles import BROWSER_HELLOS, MINIMAL_HELLOS  # noqa: E402
from pcapvision.synth.tls import CLIENT_TO_SERVER, SERVER_TO_CLIENT, ServerShape, TestPki, TlsFactory  # noqa: E402
from pcapvision.synth.wire import Direction  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeat`` runs (CPU time matters on a shared machine)."""
    times = []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - start_cpu))
    return min(times)


def bench_generate(flows: int, difficulty: str, max_flow_kib: int, repeat: int) -> dict:
    results = {}

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
            summary = generate(tmp, flows=flows, seed=1, difficulty=difficulty, max_flow_kib=max_flow_kib, quiet=True)
            results["summary"] = summary
            results["frames"] = _sample_frames(summary.files[0], 5000)

    seconds, cpu = _best(run, repeat)
    summary = results["summary"]
    tls_flows = sum(1 for t in summary.truths if t.protocol == "tcp" and t.client_payload)
    return {"seconds": seconds, "cpu": cpu, "flows": summary.flows, "tls_flows": tls_flows, "packets": summary.packets,
            "bytes": summary.bytes, "frames": results["frames"]}


def _sample_frames(path: Path, limit: int) -> list[bytes]:
    with open(path, "rb") as fh:
        return [frame for _, frame in zip(range(limit), (f for _, f in dpkt.pcap.Reader(fh)))]


def bench_tls(sessions: int, repeat: int) -> tuple[float, float]:
    """Seconds for ``sessions`` TLS sessions: handshake, 400 B request, 2 kB response, close."""
    with TestPki(1) as pki:
        factory = TlsFactory(pki)
        shapes = [(BROWSER_HELLOS[0], ServerShape()), (MINIMAL_HELLOS[0], ServerShape(cert_kind="self-signed"))]
        names = [f"host{i}.example.com" for i in range(50)]
        for name in names:  # contexts and certificates built once, as in a run
            for hello, server in shapes:
                factory.session(hello, server, name, name)

        def run() -> None:
            for i in range(sessions):
                hello, server = shapes[i % 2]
                session = factory.session(hello, server, names[i % 50], names[i % 50])
                session.handshake()
                session.send(CLIENT_TO_SERVER, 400)
                session.send(SERVER_TO_CLIENT, 2000)
                session.close(CLIENT_TO_SERVER)

        return _best(run, repeat)


def _frame_fields(frames: list[bytes]) -> list[tuple]:
    """Header fields of the sampled TCP frames, to rebuild each frame both ways."""
    fields = []
    for frame in frames:
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        ttl = ip.ttl if isinstance(ip, dpkt.ip.IP) else ip.hlim
        fields.append((eth.src, eth.dst, ip.src, ip.dst, ttl, tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags,
                       tcp.win, bytes(tcp.data), bytes(tcp.opts)))
    return fields


def bench_frames(fields: list[tuple], repeat: int) -> tuple[float, float, int]:
    """CPU seconds to build ``fields`` as frames with our encoder and with scapy, and the count."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    directions = {}

    def ours() -> None:
        for smac, dmac, src, dst, ttl, sport, dport, seq, ack, flags, win, data, opts in fields:
            key = (smac, dmac, src, dst, ttl)
            d = directions.get(key)
            if d is None:
                d = directions[key] = Direction(smac, dmac, src, dst, ttl)
            d.tcp(sport, dport, seq, ack, flags, win, data, opts)

    def text(address: bytes) -> str:
        return str(ipaddress.ip_address(address))

    prepared = [(f, text(f[2]), text(f[3]), ":".join(f"{b:02x}" for b in f[0]), ":".join(f"{b:02x}" for b in f[1]))
                for f in fields]

    def scapy_path() -> None:
        for (smac, dmac, src, dst, ttl, sport, dport, seq, ack, flags, win, data, opts), s, d, sm, dm in prepared:
            l3 = IPv6(src=s, dst=d, hlim=ttl) if len(src) == 16 else IP(src=s, dst=d, ttl=ttl, flags="DF")
            packet = Ether(src=sm, dst=dm) / l3 / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                                                      window=win) / Raw(data)
            bytes(packet)

    return _best(ours, repeat)[1], _best(scapy_path, repeat)[1], len(fields)


def separability(flows: int, max_flow_kib: int) -> None:
    """Accuracy of a random forest on each flow's first 784 payload bytes (the payload image's
    pixels) per difficulty preset, cross-validated by host (5 folds: no host in train and test)."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold

    from pcapvision.ingest import Labeler, read_flows

    print(f"{'difficulty':12s} {'flows':>6s} {'accuracy':>9s}  misclassified flows by family (5-fold, grouped by host)")
    for difficulty in ("easy", "realistic", "hard"):
        with tempfile.TemporaryDirectory(prefix="bench-synth-sep-") as tmp:
            summary = generate(tmp, flows=flows, seed=21, difficulty=difficulty, max_flow_kib=max_flow_kib, quiet=True)
            labeler = Labeler.from_rules_csv(Path(tmp) / "labels.csv")
            pixels, malicious, host, family = [], [], [], []
            for pcap in summary.files:
                for row in read_flows(pcap, labeler=labeler).to_pylist():
                    if row["payload"]:
                        pixels.append(np.frombuffer(row["payload"][:784].ljust(784, b"\0"), np.uint8))
                        malicious.append(row["label"] == "malicious")
                        host.append(pcap.stem)
                        family.append(row["family"])
        x, y, groups, family = np.array(pixels), np.array(malicious), np.array(host), np.array(family)
        wrong = np.zeros(len(y), bool)
        for train, test in GroupKFold(n_splits=5).split(x, y, groups):
            model = RandomForestClassifier(100, random_state=0, n_jobs=1).fit(x[train], y[train])
            wrong[test] = model.predict(x[test]) != y[test]
        errors = {str(f): int(n) for f, n in zip(*np.unique(family[wrong], return_counts=True))}
        print(f"{difficulty:12s} {len(y):6d} {1 - wrong.mean():9.3f}  {errors}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=1500)
    parser.add_argument("--difficulty", default="realistic")
    parser.add_argument("--max-flow-kib", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--separability", action="store_true",
                        help="also train a random forest on payload bytes per difficulty (about a minute)")
    args = parser.parse_args(argv)

    print(f"# synth benchmark: {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    gen = bench_generate(args.flows, args.difficulty, args.max_flow_kib, args.repeat)
    tls_s, tls_cpu = bench_tls(gen["tls_flows"], args.repeat)
    ours_s, scapy_s, frames = bench_frames(_frame_fields(gen["frames"]), args.repeat)
    per_packet_scapy = scapy_s / frames
    per_packet_ours = ours_s / frames
    print(f"generate --flows {args.flows} --difficulty {args.difficulty} --max-flow-kib {args.max_flow_kib}: "
          f"{gen['flows']} flows ({gen['tls_flows']} TLS), {gen['packets']} packets, {gen['bytes'] / 1e6:.2f} MB")
    print(f"{'what':44s} {'wall s':>7s} {'CPU s':>7s} {'flows/s':>8s} {'MB/s':>6s}  (rates per CPU second)")
    print(f"{'synth generate (all stages)':44s} {gen['seconds']:7.2f} {gen['cpu']:7.2f} "
          f"{gen['flows'] / gen['cpu']:8.0f} {gen['bytes'] / 1e6 / gen['cpu']:6.2f}")
    print(f"{'baseline: TLS sessions alone (same count)':44s} {tls_s:7.2f} {tls_cpu:7.2f} "
          f"{gen['tls_flows'] / tls_cpu:8.0f}")
    print(f"{'packets (CPU time)':44s} {'us/pkt':>7s} {'':>7s} {'pkts/s':>8s}")
    print(f"{'frame encoder (struct + big-int checksum)':44s} {per_packet_ours * 1e6:7.1f} {'':>7s} {1 / per_packet_ours:8.0f}")
    print(f"{'baseline: scapy Ether/IP/TCP/Raw + bytes()':44s} {per_packet_scapy * 1e6:7.1f} {'':>7s} {1 / per_packet_scapy:8.0f}")
    print(f"scapy would add {gen['packets'] * (per_packet_scapy - per_packet_ours):.1f} CPU s to this run "
          f"({gen['packets']} packets); encoder speed-up x{scapy_s / ours_s:.1f}")
    if args.separability:
        separability(args.flows, args.max_flow_kib)


if __name__ == "__main__":
    main()
