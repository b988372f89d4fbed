"""Ingest benchmark: pcapvision ingest beside a plain dpkt loop, the raw record walk and scapy.

    .venv/bin/python bench/ingest.py                 # generate (cached in bench/out/) and measure
    .venv/bin/python bench/ingest.py --pcap my.pcap  # measure a capture of your own
    .venv/bin/python bench/ingest.py --stages        # CPU of each ingest stage, per capture
    .venv/bin/python bench/ingest.py --profile 200000  # cProfile of one ingest

Generates Ethernet/IPv4 captures of TCP flows (handshake, a TLS ClientHello with SNI, TLS records
both ways, FIN close) and UDP flows, written record by record with numpy (no per-packet Python),
at three sizes (default 0.5M, 1M and 2M packets, 40 packets per flow on average, ~100 new flows
a second, so open-flow state is the same at every size: peak memory must not grow with the
size). Every measurement runs in its own subprocess and reports the peak RSS and anonymous RSS
of its process tree. Prints one table (packets/s, MB/s, peak memory per method and size), then
per capture the ratio of ``pcapvision ingest --jobs 1`` to the dpkt loop per CPU second, both
without ingest's start-up (interpreter, imports) and as a whole process, and the marginal rate
between the two largest captures (extra packets / extra CPU seconds), the per-packet rate once
fixed costs (imports, loading compiled code, first calls) are paid.

``--stages`` instead runs, in one child process per capture, the stages of ingest one after the
other as ``pcapvision ingest`` chains them (streamed, memory bounded as in ingest) and prints the
CPU seconds (``time.process_time``) each stage spends on its own: sha256 of the capture, record
walk, decode, flow assembly (with rebatching), flow ids and labels (a small CIDR/port rule set),
Parquet write. The first call of the compiled loops (loading them from numba's cache) is paid on
a small capture first and printed on its own line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import mmap
import os
import platform
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"
PACKETS_PER_FLOW = 40
NEW_FLOWS_PER_S = 100.0
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10
SNIS = [f"{host}.{dom}" for host in ("www", "api", "cdn", "static", "mail") for dom in
        ("example.com", "example.org", "test.net", "shop.example", "video.test")]

# One pcap record header + Ethernet + IPv4 + TCP/UDP header, as written on disk.
_PREFIX = [("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl_len", "<u4"), ("orig_len", "<u4"),
           ("eth_dst", "u1", (6,)), ("eth_src", "u1", (6,)), ("eth_type", ">u2"),
           ("ver_ihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
           ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"), ("src", ">u4"), ("dst", ">u4")]
TCP_RECORD = np.dtype(_PREFIX + [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
                                 ("off", "u1"), ("flags", "u1"), ("win", ">u2"), ("tcp_csum", ">u2"),
                                 ("urg", ">u2")])
UDP_RECORD = np.dtype(_PREFIX + [("sport", ">u2"), ("dport", ">u2"), ("ulen", ">u2"), ("udp_csum", ">u2")])
IP_OFFSET = 16 + 14


def client_hello(sni: str, rng: np.random.Generator) -> bytes:
    """A TLS 1.3-style ClientHello record carrying ``sni`` (what the TLS parser looks for)."""
    name = sni.encode()
    exts = b"".join([
        struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name,  # server_name
        struct.pack("!HHH", 10, 6, 4) + struct.pack("!HH", 0x001D, 0x0017),        # supported_groups
        struct.pack("!HHB", 11, 2, 1) + b"\x00",                                     # ec_point_formats
        struct.pack("!HHB", 43, 5, 4) + struct.pack("!HH", 0x0304, 0x0303),          # supported_versions
        struct.pack("!HH", 51, 38) + struct.pack("!HHH", 36, 0x001D, 32) + rng.bytes(32),  # key_share
    ])
    ciphers = struct.pack("!6H", 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC030)
    body = (b"\x03\x03" + rng.bytes(32) + b"\x20" + rng.bytes(32) + struct.pack("!H", len(ciphers)) + ciphers
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def generate_capture(path: Path, packets: int, seed: int) -> dict:
    """Write a pcap of about ``packets`` packets; returns its description (also saved beside it)."""
    rng = np.random.default_rng(seed)
    n_flows = max(1, packets // PACKETS_PER_FLOW)
    is_tcp = rng.random(n_flows) < 0.8
    n_data = np.where(is_tcp, rng.integers(1, 64, n_flows), rng.integers(2, 78, n_flows))
    per_flow = np.where(is_tcp, n_data + 8, n_data)  # TCP: 3 handshake + 2 hellos + data + 3 close
    flow = np.repeat(np.arange(n_flows), per_flow)
    first = np.cumsum(per_flow) - per_flow
    k = np.arange(flow.size) - first[flow]
    tcp = is_tcp[flow]
    last_k = per_flow[flow] - 1
    n = flow.size

    # Roles by position in the flow. direction 0: client -> server.
    direction = rng.random(n) < 0.6  # data packets: 60% server -> client
    plen = np.where(direction, np.where(rng.random(n) < 0.35, 1400, rng.integers(40, 800, n)),
                    np.where(rng.random(n) < 0.5, 0, rng.integers(20, 300, n)))
    flags = np.full(n, PSH | ACK, np.uint8)
    templates = [client_hello(s, rng) for s in SNIS]
    template = rng.integers(0, len(templates), n_flows)
    hello_len = np.array([len(t) for t in templates])[template][flow]
    for pos, dir_, flag, length in ((0, 0, SYN, 0), (1, 1, SYN | ACK, 0), (2, 0, ACK, 0),
                                    (3, 0, PSH | ACK, None), (4, 1, PSH | ACK, 1400)):
        at = tcp & (k == pos)
        direction[at] = bool(dir_)
        flags[at] = flag
        plen[at] = hello_len[at] if length is None else length
    for back, dir_, flag in ((2, 0, FIN | ACK), (1, 1, FIN | ACK), (0, 0, ACK)):
        at = tcp & (k == last_k - back)
        direction[at] = bool(dir_)
        flags[at] = flag
        plen[at] = 0
    udp_first = ~tcp & (k == 0)
    direction[udp_first] = False
    flags[~tcp] = 0
    plen[~tcp] = rng.integers(40, 1200, int((~tcp).sum()))
    flags[tcp & (plen == 0) & (flags == PSH | ACK)] = ACK  # pure ACKs
    direction = direction.astype(np.int64)

    # Sequence numbers: per flow and direction, ISN + bytes (SYN and FIN count one) sent before.
    isn = rng.integers(0, 2**32, (n_flows, 2), dtype=np.uint64)
    consume = plen + ((flags & SYN) > 0) + ((flags & FIN) > 0)
    seq = np.zeros(n, np.uint64)
    for d in (0, 1):
        sel = np.flatnonzero(direction == d)
        c = consume[sel].astype(np.uint64)
        before = np.cumsum(c) - c
        flows_d = flow[sel]
        starts = np.r_[0, np.flatnonzero(np.diff(flows_d)) + 1]
        base = np.repeat(before[starts], np.diff(np.r_[starts, sel.size]))
        seq[sel] = (isn[flows_d, d] + before - base) % 2**32

    # Time: flows start at ~NEW_FLOWS_PER_S, packets 1-50 ms apart within a flow.
    duration_s = n_flows / NEW_FLOWS_PER_S
    start_us = (rng.random(n_flows) * duration_s * 1e6).astype(np.int64) + 1_700_000_000 * 10**6
    gap_us = rng.integers(1_000, 50_000, n_flows)
    ts_us = start_us[flow] + k * gap_us[flow] + rng.integers(0, 500, n)
    order = np.argsort(ts_us, kind="stable")

    client_ip = (10 << 24) + rng.integers(1, 5000, n_flows)
    server_ip = (192 << 24 | 0 << 16 | 2 << 8) + rng.integers(1, 250, n_flows) + (rng.integers(0, 40, n_flows) << 8)
    sport = rng.integers(1024, 65535, n_flows)
    dport = np.where(is_tcp, 443, rng.choice([53, 443, 3478], n_flows))
    tcp_hdr, udp_hdr = TCP_RECORD.itemsize, UDP_RECORD.itemsize

    with open(path.with_suffix(".tmp"), "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for lo in range(0, n, 65536):
            idx = order[lo:lo + 65536]
            f, d, t = flow[idx], direction[idx], tcp[idx]
            hdr = np.where(t, tcp_hdr, udp_hdr)
            rec_len = hdr + plen[idx]
            offsets = np.cumsum(rec_len) - rec_len
            buf = np.frombuffer(rng.bytes(int(rec_len.sum())), np.uint8).copy()  # payload: random, as TLS
            for mask, dtype in ((t, TCP_RECORD), (~t, UDP_RECORD)):
                m = np.flatnonzero(mask)
                rec = np.zeros(m.size, dtype)
                fi, di = f[m], d[m]
                rec["ts_sec"] = ts_us[idx[m]] // 10**6
                rec["ts_usec"] = ts_us[idx[m]] % 10**6
                rec["incl_len"] = rec["orig_len"] = rec_len[m] - 16
                rec["eth_dst"] = (2, 0, 0, 0, 0, 1)
                rec["eth_src"] = (2, 0, 0, 0, 0, 2)
                rec["eth_type"] = 0x0800
                rec["ver_ihl"] = 0x45
                rec["tot_len"] = rec_len[m] - IP_OFFSET
                rec["ip_id"] = (lo + m) & 0xFFFF
                rec["frag"] = 0x4000  # DF
                rec["ttl"] = 64
                rec["proto"] = 6 if dtype is TCP_RECORD else 17
                rec["src"] = np.where(di == 0, client_ip[fi], server_ip[fi])
                rec["dst"] = np.where(di == 0, server_ip[fi], client_ip[fi])
                rec["sport"] = np.where(di == 0, sport[fi], dport[fi])
                rec["dport"] = np.where(di == 0, dport[fi], sport[fi])
                if dtype is TCP_RECORD:
                    rec["seq"] = seq[idx[m]]
                    rec["ack"] = np.where(flags[idx[m]] & ACK, isn[fi, 1 - di] + 1, 0) % 2**32
                    rec["off"] = 5 << 4
                    rec["flags"] = flags[idx[m]]
                    rec["win"] = 64240
                else:
                    rec["ulen"] = plen[idx[m]] + 8
                raw = rec.view(np.uint8).reshape(m.size, dtype.itemsize)
                words = raw[:, IP_OFFSET:IP_OFFSET + 20].copy().view(">u2").astype(np.uint32).sum(axis=1)
                words = (words & 0xFFFF) + (words >> 16)
                words = (words & 0xFFFF) + (words >> 16)
                rec["ip_csum"] = ~words.astype(np.uint16)
                buf[offsets[m, None] + np.arange(dtype.itemsize)] = raw
            # TLS record headers on payloads; the ClientHello templates in full.
            p = idx
            payload_at = offsets + hdr
            hello = t & (k[p] == 3)
            data = (plen[p] >= 5) & ~hello
            lengths = plen[p][data] - 5
            tls_hdr = np.stack([np.where(t[data] & (k[p][data] == 4), 0x16, 0x17), np.full(lengths.size, 3),
                                np.full(lengths.size, 3), lengths >> 8, lengths & 0xFF], axis=1).astype(np.uint8)
            buf[payload_at[data, None] + np.arange(5)] = tls_hdr
            for ti, tmpl in enumerate(templates):
                at = np.flatnonzero(hello & (template[f] == ti))
                if at.size:
                    buf[payload_at[at, None] + np.arange(len(tmpl))] = np.frombuffer(tmpl, np.uint8)
            fh.write(buf.tobytes())
    os.replace(path.with_suffix(".tmp"), path)
    info = {"packets": int(n), "flows": int(n_flows), "tcp_flows": int(is_tcp.sum()), "bytes": path.stat().st_size,
            "seed": seed}
    path.with_suffix(".json").write_text(json.dumps(info))
    return info


def cached_capture(packets: int, seed: int) -> tuple[Path, dict]:
    """The generated capture for (packets, seed), made in a child process so this one stays small."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"synthetic-{packets}-seed{seed}.pcap"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(path), "--packets", str(packets),
                        "--seed", str(seed)], check=True)
        info = json.loads(meta.read_text())
        print(f"generated {path.name}: {info['packets']:,} packets, {info['flows']:,} flows, "
              f"{info['bytes'] / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path, json.loads(meta.read_text())


# --- measured methods (each runs in a child process) ------------------------------------------
def walk_records(path: str, limit: int | None = None) -> int:
    """The floor: visit every record header of a classic pcap, decode nothing."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset, size, count, unpack = 24, len(mm), 0, struct.Struct("<I").unpack_from
        while offset + 16 <= size:
            offset += 16 + unpack(mm, offset + 8)[0]
            count += 1
    return count


def dpkt_flows(path: str, limit: int | None = None) -> int:
    """The baseline: dpkt.pcap.Reader, Ethernet/IP/TCP/UDP decode, a dict of bidirectional flows."""
    import dpkt

    flows: dict[tuple, list] = {}
    count = 0
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            count += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            l4 = ip.data
            if not isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                continue
            a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            key = (ip.p, *a, *b) if a <= b else (ip.p, *b, *a)
            state = flows.get(key)
            if state is None:
                flows[key] = [ts, ts, 1, ip.len, bytes(l4.data[:16])]
            else:
                state[1] = ts
                state[2] += 1
                state[3] += ip.len
    return count


def scapy_slice(path: str, limit: int | None = None) -> int:
    """scapy's PcapReader, full dissection, on the first ``limit`` packets."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import PcapReader

    count = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            if IP in pkt and (TCP in pkt or UDP in pkt):
                _ = pkt[IP].src, pkt[IP].dst
            count += 1
            if limit and count >= limit:
                break
    return count


CHILD_METHODS = {"walk": walk_records, "dpkt": dpkt_flows, "scapy": scapy_slice}


def _tree_memory(root: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) in bytes summed over ``root`` and its descendants (0, 0 once it is gone)."""
    rss = anon = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return rss, anon


def run_child(argv: list[str]) -> tuple[float, int, int, str, float]:
    """Run ``argv``; return (wall seconds, peak RSS, peak anonymous RSS, stdout, CPU seconds).

    Memory is sampled every 20 ms over the process and its workers, summed: RSS counts the pages
    of memory-mapped captures (page cache, reclaimable) while anonymous RSS is the memory the
    process really allocates, the figure that must not grow with the capture.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        peak_rss = peak_anon = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, anon = _tree_memory(proc.pid)
            peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stdout}\n{err.read().decode()}")
    # CPU of the process and of its reaped workers: the figure that other load on
    # the shared cores does not inflate.
    return seconds, peak_rss, peak_anon, stdout, usage.ru_utime + usage.ru_stime


def measure_method(method: str, path: Path, limit: int | None = None) -> dict:
    argv = [sys.executable, __file__, "--child", method, "--pcap", str(path)]
    argv += ["--limit", str(limit)] if limit else []
    seconds, rss, anon, stdout, _ = run_child(argv)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"packets": result["packets"], "bytes": result["bytes"], "seconds": result["seconds"],
            "cpu": result["cpu"], "wall_s": seconds, "rss": rss, "anon": anon}


def measure_ingest(paths: list[Path], jobs: int, packets: int) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT_DIR) as tmp:
        argv = [sys.executable, "-m", "pcapvision", "ingest", *map(str, paths), "-o", f"{tmp}/flows.parquet",
                "--jobs", str(jobs), "--quiet"]
        seconds, rss, anon, stdout, cpu = run_child(argv)
    size = sum(p.stat().st_size for p in paths)
    # The summary's own time excludes interpreter start-up and imports, like the other methods'.
    inside = float(re.search(r"MB, ([0-9.]+) s", stdout).group(1))
    return {"packets": packets, "bytes": size, "seconds": inside, "cpu": cpu - startup_cpu(), "wall_s": seconds,
            "rss": rss, "anon": anon, "process_cpu": cpu}


@functools.lru_cache(maxsize=None)
def startup_cpu() -> float:
    """CPU seconds of starting the CLI, building its parser and importing what ingest imports
    (subtracted from its CPU)."""
    argv = [sys.executable, "-c", "from pcapvision.cli import build_parser; build_parser(); "
                                  "import pcapvision.executor, pcapvision.ingest"]
    return min(run_child(argv)[4] for _ in range(3))


def child_main(method: str, path: str, limit: int | None) -> None:
    started, cpu_started = time.perf_counter(), time.process_time()
    count = CHILD_METHODS[method](path, limit)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    size = os.path.getsize(path)
    if limit and count >= limit:
        size = _bytes_of_first(path, count)
    print(json.dumps({"packets": count, "bytes": size, "seconds": seconds, "cpu": cpu}))


def _bytes_of_first(path: str, count: int) -> int:
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset = 24
        for _ in range(count):
            offset += 16 + struct.unpack_from("<I", mm, offset + 8)[0]
    return offset


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pcap", type=Path, help="measure this capture instead of generated ones")
    parser.add_argument("--sizes", default="500000,1000000,2000000",
                        help="packets of the generated captures, comma-separated (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the walk, dpkt and ingest per capture, alternated; the median is kept "
                             "(default: %(default)s)")
    parser.add_argument("--scapy-packets", type=int, default=20_000, help="scapy slice size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default: %(default)s)")
    parser.add_argument("--profile", type=int, metavar="PACKETS", default=0,
                        help="instead, print a cProfile of ingest on a generated capture of PACKETS packets")
    parser.add_argument("--stages", action="store_true",
                        help="instead, print the CPU seconds of each ingest stage, per capture")
    parser.add_argument("--child", choices=sorted(CHILD_METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--stages-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--packets", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, str(args.pcap), args.limit)
        return
    if args.stages_child:
        stages_child(args.pcap, args.warmup)
        return
    if args.generate:
        generate_capture(args.generate, args.packets, args.seed)
        return
    if args.profile:
        profile(cached_capture(args.profile, args.seed)[0])
        return

    if args.pcap:
        captures = [(args.pcap, {"packets": walk_records(str(args.pcap)), "flows": None})]
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        captures = [cached_capture(size, args.seed) for size in sizes]
    if args.stages:
        stages(captures, cached_capture(STAGES_WARMUP_PACKETS, args.seed)[0])
        return
    if not args.pcap:
        # --jobs parallelises over files: the smallest size again with another seed makes a pair.
        pair = [captures[0][0], cached_capture(sizes[0], args.seed + 1)[0]]
    print(f"machine: {machine()}")
    # The compiled loops are built on the first run after an install or upgrade and cached: one
    # small ingest first, so that no measured run pays the compilation (its CPU is printed).
    warmup = measure_ingest([cached_capture(STAGES_WARMUP_PACKETS, args.seed)[0]], 1, STAGES_WARMUP_PACKETS)
    print(f"warm-up ingest of {STAGES_WARMUP_PACKETS:,} packets: {warmup['process_cpu']:.1f} CPU s "
          "(tens of seconds when it compiled the loops, about 2 s when they were cached)")
    # What every process pays before its first packet: start-up, then the first-use loads
    # (numba's compiled loops and the libraries numba imports for them).
    tiny = cached_capture(TINY_PACKETS, args.seed)[0]
    fixed_cpu = min(measure_ingest([tiny], 1, TINY_PACKETS)["process_cpu"] for _ in range(3))
    print(f"fixed cost per process (whole-process CPU of ingesting {TINY_PACKETS} packets, best of 3): {fixed_cpu:.2f} s, "
          f"of which start-up (interpreter, parser, imports) {startup_cpu():.2f} s")
    rows = []
    measured: dict[tuple[str, str], dict] = {}

    def add(name: str, capture: str, r: dict) -> None:
        measured[name, capture] = r
        rows.append((name, capture, r["packets"], r["packets"] / r["seconds"], r["packets"] / r["cpu"],
                     r["bytes"] / 1e6 / r["seconds"], r["rss"] / 2**20, r["anon"] / 2**20, r["seconds"], r["cpu"]))

    for path, info in captures:
        label = f"{path.name} ({info['packets']:,} pkts, {path.stat().st_size / 1e6:.0f} MB)"
        # Alternated, --repeat times: on a shared machine each row keeps the run of median CPU.
        runs: dict[str, list[dict]] = {"raw record walk (floor)": [], "dpkt loop (baseline)": [],
                                       "pcapvision ingest --jobs 1": []}
        for _ in range(args.repeat):
            runs["raw record walk (floor)"].append(measure_method("walk", path))
            runs["dpkt loop (baseline)"].append(measure_method("dpkt", path))
            runs["pcapvision ingest --jobs 1"].append(measure_ingest([path], 1, info["packets"]))
        for name, results in runs.items():
            add(name, label, sorted(results, key=lambda r: r["cpu"])[len(results) // 2])
            if args.repeat > 1:
                cpus = sorted(r["cpu"] for r in results)
                print(f"{name} on {path.name}: CPU s of the {args.repeat} runs {', '.join(f'{c:.2f}' for c in cpus)}")
    if not args.pcap:
        total = sum(json.loads(p.with_suffix(".json").read_text())["packets"] for p in pair)
        label = f"2 files, {total:,} pkts"
        for jobs in (1, 2):
            add(f"pcapvision ingest --jobs {jobs}", label, measure_ingest(pair, jobs, total))
    add("scapy PcapReader (slice)", f"first {args.scapy_packets:,} pkts of {captures[0][0].name}",
        measure_method("scapy", captures[0][0], args.scapy_packets))

    header = ("method", "capture", "packets", "packets/s", "packets/s (CPU)", "MB/s", "peak RSS MiB",
              "peak anon MiB", "wall s", "CPU s")
    print(f"| {' | '.join(header)} |")
    print("|" + "---|" * 2 + "---:|" * (len(header) - 2))
    for name, capture, packets, pps, cpu_pps, mbs, rss, anon, seconds, cpu in rows:
        print(f"| {name} | {capture} | {packets:,} | {pps:,.0f} | {cpu_pps:,.0f} | {mbs:,.1f} | {rss:,.0f} | "
              f"{anon:,.0f} | {seconds:.1f} | {cpu:.1f} |")
    ingest_name, dpkt_name = "pcapvision ingest --jobs 1", "dpkt loop (baseline)"
    compared = []  # (packets, ingest, dpkt) per capture measured by both
    for (name, capture), ingest_r in measured.items():
        dpkt_r = measured.get((dpkt_name, capture))
        if name != ingest_name or dpkt_r is None:
            continue
        compared.append((ingest_r["packets"], ingest_r, dpkt_r))
        dpkt_cpu_pps = dpkt_r["packets"] / dpkt_r["cpu"]
        print(f"ingest --jobs 1 / dpkt loop on {capture.split(' ')[0]}: "
              f"{(ingest_r['packets'] / ingest_r['seconds']) / (dpkt_r['packets'] / dpkt_r['seconds']):.1f}x (wall), "
              f"{(ingest_r['packets'] / ingest_r['cpu']) / dpkt_cpu_pps:.1f}x (CPU, ingest without start-up), "
              f"{(ingest_r['packets'] / ingest_r['process_cpu']) / dpkt_cpu_pps:.1f}x "
              f"(CPU, ingest as a whole process: {ingest_r['process_cpu']:.2f} s), "
              f"{(ingest_r['packets'] / (ingest_r['process_cpu'] - fixed_cpu)) / dpkt_cpu_pps:.1f}x "
              "(CPU, ingest without the fixed cost per process)")
    if len({packets for packets, _, _ in compared}) >= 2:
        # The two largest captures: what each extra packet costs once fixed costs are paid.
        (small, ingest_a, dpkt_a), (large, ingest_b, dpkt_b) = sorted(compared, key=lambda c: c[0])[-2:]
        extra = large - small
        ingest_rate = extra / (ingest_b["process_cpu"] - ingest_a["process_cpu"])
        dpkt_rate = extra / (dpkt_b["cpu"] - dpkt_a["cpu"])
        print(f"marginal rate {small:,} -> {large:,} pkts ({extra:,} extra packets / extra CPU s): ingest --jobs 1 "
              f"{ingest_rate:,.0f} packets/s, dpkt loop {dpkt_rate:,.0f} packets/s, {ingest_rate / dpkt_rate:.1f}x")
    print("wall s: inside the process, without interpreter start-up and imports (ingest: the time its summary "
          "prints); CPU s: user+system of the process and its workers (ingest: minus start-up and imports, "
          f"{startup_cpu():.2f} s; 'as a whole process' keeps them); dpkt loop CPU: its loop only; MB/s on wall "
          "time; memory sampled every 20 ms over the process tree")


def profile(path: Path) -> None:
    """cProfile of one ingest of ``path`` into a single Parquet file, by own time."""
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO))  # run from a checkout, installed or not
    from pcapvision.ingest import ingest

    with tempfile.TemporaryDirectory(dir=OUT_DIR) as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        summary = ingest([path], Path(tmp) / "flows.parquet", quiet=True)
        profiler.disable()
    print(summary.format())
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


# --- --stages: CPU per ingest stage ------------------------------------------------------------
STAGES = ("sha256", "record walk", "decode", "assemble", "flow ids + labels", "write")
STAGES_WARMUP_PACKETS = 20_000
TINY_PACKETS = 100
# A small rule set of the shapes rules files use (CIDRs, ports, protocols), matching the
# generated traffic: clients in 10/8, servers in 192.0.0.0/16, UDP to 53, 443 and 3478.
STAGES_RULES = """label,family,src_ip,dst_ip,port,protocol
dns,,,,53,udp
stun,,,,3478,udp
quic,web,,,443,udp
tls,web,10.0.0.0/8,192.0.0.0/16,443,tcp
"""


class StageClock:
    """CPU seconds (``time.process_time``) each stage spends on its own: while a stage waits for
    its upstream (a generator it pulls from), the time counts for the upstream."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._active: list[str] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._active.append(name)
        started = time.process_time()
        try:
            yield
        finally:
            spent = time.process_time() - started
            self._active.pop()
            self.seconds[name] += spent
            if self._active:
                self.seconds[self._active[-1]] -= spent

    def wrap(self, name: str, items: Iterable) -> Iterator:
        """``items``, the time spent producing each counted for ``name``."""
        items, done = iter(items), object()
        while True:
            with self.stage(name):
                item = next(items, done)
            if item is done:
                return
            yield item


def run_stages(path: Path) -> tuple[dict[str, float], int, int]:
    """Ingest ``path`` into a Parquet file stage by stage: (CPU seconds per stage, packets, flows)."""
    from pcapvision.ingest import assembler, capture, flowstream, writer
    from pcapvision.ingest.flowschema import STAGE
    from pcapvision.ingest.labels import Labeler
    from pcapvision.ingest.options import IngestOptions, ingest_params
    from pcapvision.ingest.readers import read_packets
    from pcapvision.io import make_metadata, sha256_file

    clock = StageClock()
    options = IngestOptions()
    packets = flows = 0
    iter_records = capture.iter_records  # read_packets walks through capture.iter_records
    capture.iter_records = lambda *a, **k: clock.wrap("record walk", iter_records(*a, **k))
    try:
        with tempfile.TemporaryDirectory(dir=OUT_DIR) as tmp, flowstream.untraced_heap():
            rules = Path(tmp) / "rules.csv"
            rules.write_text(STAGES_RULES)
            labeler = Labeler.from_rules_csv(rules)
            with clock.stage("sha256"):
                sha = sha256_file(path)
            sink = writer.FlowsWriter(Path(tmp) / "flows.parquet")
            decoded = clock.wrap("decode", read_packets(path, reader=options.reader,
                                                        chunk_packets=options.chunk_packets))

            def counted(batches: Iterable) -> Iterator:
                nonlocal packets
                for batch in batches:
                    packets += len(batch)
                    yield batch

            ended = assembler.assemble_flow_batches(counted(decoded), options.flow_options(),
                                                    flush_flows=flowstream.OUTPUT_BATCH_FLOWS,
                                                    flush_bytes=flowstream.OUTPUT_BATCH_BYTES)
            for batch in clock.wrap("assemble", ended):
                with clock.stage("flow ids + labels"):
                    batch = flowstream._to_flows_schema(batch, str(path), sha, labeler)
                flows += batch.num_rows
                with clock.stage("write"):
                    sink.write(batch)
            with clock.stage("write"):
                sink.close(make_metadata(STAGE, ingest_params(options, labeler), sources=[]))
    finally:
        capture.iter_records = iter_records
    return clock.seconds, packets, flows


def stages_child(path: Path, warmup: Path) -> None:
    sys.path.insert(0, str(REPO))  # run from a checkout, installed or not
    import pyarrow as pa

    pa.array([0])  # pyarrow imports pandas on its first array: not a stage
    first = sum(run_stages(warmup)[0].values())
    again = sum(run_stages(warmup)[0].values())
    seconds, packets, flows = run_stages(path)
    print(json.dumps({"seconds": seconds, "packets": packets, "flows": flows, "first_call": first - again}))


def stages(captures: list[tuple[Path, dict]], warmup: Path) -> None:
    """Per capture, in a child process: the CPU seconds of each ingest stage."""
    print(f"machine: {machine()}")
    for path, _ in captures:
        argv = [sys.executable, __file__, "--stages-child", "--pcap", str(path), "--warmup", str(warmup)]
        wall, rss, anon, stdout, _ = run_child(argv)
        r = json.loads(stdout.strip().splitlines()[-1])
        total = sum(r["seconds"].values())
        print(f"\n{path.name}: {r['packets']:,} packets, {r['flows']:,} flows, {path.stat().st_size / 1e6:.0f} MB; "
              f"{total:.2f} CPU s in the stages ({r['packets'] / total:,.0f} packets per CPU s); "
              f"peak RSS {rss / 2**20:,.0f} MiB, anonymous {anon / 2**20:,.0f} MiB")
        print(f"first compiled call (numba loading): {r['first_call']:.2f} CPU s (paid before timing: the stages "
              f"on {warmup.name} run once, minus a second run)")
        print("| stage | CPU s | share |")
        print("|---|---:|---:|")
        for name in STAGES:
            print(f"| {name} | {r['seconds'][name]:.2f} | {r['seconds'][name] / total:.0%} |")
        print(f"| total | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
