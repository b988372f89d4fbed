"""Label import throughput: a CIC-IDS2017-style CSV against a flows table, phase by phase.

    .venv/bin/python bench/labels_import.py              # 100,000 records / flows
    .venv/bin/python bench/labels_import.py --n 20000 --json

A flows table of N TCP/UDP flows (500 clients, 5,000 servers, random client ports; starts spread
over an afternoon) is built in
memory; the CSV has one record per flow in CICFlowMeter's layout (' Source IP' headers,
``dd/mm/yyyy h:mm`` on a 12-hour clock without PM, half the records in the reverse direction,
80% BENIGN), plus 1% records with no flow. Phases are timed separately (wall and process CPU):
``csv.reader`` over the file (the floor), reading it into records, building and writing the rules,
matching records to flows (the report), and labelling the flows with the written rules through
``Labeler`` (what ingest does). The labels must come out as generated: the run checks it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcapvision.ingest import Labeler  # noqa: E402
from pcapvision.ingest.importers import cicflowmeter  # noqa: E402
from pcapvision.ingest.importers.matcher import match_flows  # noqa: E402
from pcapvision.ingest.importers.records import ImportOptions  # noqa: E402
from pcapvision.ingest.importers.rules import build_rules, write_rules  # noqa: E402

ZONE = "America/Halifax"
HEADER = ["Flow ID", " Source IP", " Source Port", " Destination IP", " Destination Port", " Protocol",
          " Timestamp", " Flow Duration", " Total Fwd Packets", " Label"]


def make_data(n: int, directory: Path, seed: int = 0) -> tuple[pa.Table, Path, list[str]]:
    rng = np.random.default_rng(seed)
    start = datetime(2017, 7, 3, 13, 0, tzinfo=ZoneInfo(ZONE))
    offsets = np.sort(rng.integers(0, 4 * 3600 * 10**6, n))  # µs over four afternoon hours
    # Hosts repeat as in a lab capture: 500 clients, 5,000 servers.
    clients = [f"192.168.{i // 250}.{i % 250 + 1}" for i in range(500)]
    servers = [f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(5000)]
    src = [clients[i] for i in rng.integers(0, len(clients), n)]
    dst = [servers[i] for i in rng.integers(0, len(servers), n)]
    sport = rng.integers(1024, 65536, n)
    dport = rng.choice([80, 443, 53, 22, 8080], n)
    proto = np.where(dport == 53, 17, 6)
    labels = np.where(rng.random(n) < 0.8, "BENIGN", "DoS Hulk")
    first_seen = [int((start + timedelta(microseconds=int(o))).timestamp() * 10**6) * 1000 for o in offsets]
    flows = pa.table({
        "flow_id": [f"{i:016x}" for i in range(n)], "src_ip": src, "dst_ip": dst,
        "src_port": pa.array(sport, pa.uint16()), "dst_port": pa.array(dport, pa.uint16()),
        "protocol": pa.array(proto, pa.uint8()), "first_seen_ns": pa.array(first_seen, pa.int64()),
        "source_file": ["Monday.pcap"] * n, "tls_sni": pa.nulls(n, pa.string()), "label": pa.nulls(n, pa.string()),
        "family": pa.nulls(n, pa.string()), "label_source": pa.nulls(n, pa.string())})
    path = directory / "Monday-WorkingHours.pcap_ISCX.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            local = start + timedelta(microseconds=int(offsets[i]))
            stamp = f"{local.day}/{local.month}/{local.year} {local.hour % 12 or 12}:{local.minute:02d}"
            ends = [src[i], sport[i], dst[i], dport[i]]
            if i % 2:
                ends = ends[2:] + ends[:2]
            writer.writerow(["x", *ends, proto[i], stamp, int(rng.integers(0, 5 * 10**6)), 3, labels[i]])
        for i in range(n // 100):
            writer.writerow(["x", "172.16.0.1", 1000 + i, "172.16.0.2", 80, 6, "3/7/2017 1:30", 10, 1, "BENIGN"])
    expected = ["normal" if label == "BENIGN" else "malicious" for label in labels]
    return flows, path, expected


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="flows (and records)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    options = ImportOptions(tz=ZONE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flows, path, expected = make_data(args.n, tmp)
        rows = {}

        def floor() -> int:
            with open(path, newline="") as fh:
                return sum(1 for _ in csv.reader(fh))

        lines, wall, cpu = timed(floor)
        rows["csv.reader over the file (floor)"] = (wall, cpu)
        result, wall, cpu = timed(cicflowmeter.read, path, options)
        rows["read CSV -> records"] = (wall, cpu)
        (rules, conflicts), wall, cpu = timed(build_rules, result.records)
        rows["records -> rules (conflict cut)"] = (wall, cpu)
        rules_path, wall, cpu = timed(write_rules, rules, tmp / "rules.csv")
        rows["write rules CSV"] = (wall, cpu)
        report, wall, cpu = timed(match_flows, result.records, flows, None)
        rows["match records x flows (report)"] = (wall, cpu)
        labeler, wall, cpu = timed(Labeler.from_rules_csv, rules_path)
        rows["parse rules (Labeler.from_rules_csv)"] = (wall, cpu)
        (labels, _, _), wall, cpu = timed(labeler.assign, flows, "Monday.pcap")
        rows["label the flows (Labeler.assign)"] = (wall, cpu)
        got = labels.to_pylist()
        assert got == expected, f"{sum(a != b for a, b in zip(got, expected))} flows labelled wrong"
        assert report["records"]["labeled_matched"] == args.n and report["flows"]["conflict"] == 0
        size_mb = os.path.getsize(path) / 1e6
    figures = {"n": args.n, "csv_lines": lines, "csv_mb": round(size_mb, 1), "rules": len(rules),
               "phases": {k: {"wall_s": round(w, 2), "cpu_s": round(c, 2), "records_per_cpu_s": round(args.n / c)}
                          for k, (w, c) in rows.items()}}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.n:,} flows, {lines:,} CSV lines ({size_mb:.1f} MB), {len(rules):,} rules; labels checked")
    print("| phase | wall s | CPU s | records per CPU s |\n|---|---:|---:|---:|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {args.n / cpu:,.0f} |")
    total = sum(c for name, (_, c) in rows.items() if "floor" not in name)
    print(f"| total (without the floor) | | {total:.2f} | {args.n / total:,.0f} |")


if __name__ == "__main__":
    main()
