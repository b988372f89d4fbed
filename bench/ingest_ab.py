"""A/B: ingest CPU time of an earlier revision's pcapvision against the working tree's, same capture.

    .venv/bin/python bench/ingest_ab.py REV                 # 0.5 M packets, 5 runs each, alternated
    .venv/bin/python bench/ingest_ab.py REV --packets 1000000 --runs 3

The capture is the one ``bench/ingest.py`` generates (cached in ``bench/out/``). ``REV``'s
``pcapvision`` package is unpacked with ``git archive``; each run is its own process calling
``ingest([capture], "x.parquet")`` and measuring CPU (``time.process_time``) and wall time around
that call only, with the peak RSS of the process. Runs alternate (before, after, before, ...) so
that the load of a shared machine falls on both alike; the table gives min, median and max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"

_CHILD = """
import json, resource, sys, time
from pcapvision.ingest import ingest
cpu, wall = time.process_time(), time.perf_counter()
summary = ingest([sys.argv[1]], sys.argv[2], quiet=True)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "wall": wall, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "flows": summary.flows}))
"""


def measure(tree: Path, capture: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(capture), str(work / "x.parquet")], env=env,
                         capture_output=True, text=True, check=True, cwd=work)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier revision (a commit, branch or tag)")
    parser.add_argument("--packets", type=int, default=500_000, help="packets of the generated capture")
    parser.add_argument("--runs", type=int, default=5, help="runs of each side")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    capture = OUT_DIR / f"ab-{args.packets}-{args.seed}.pcap"
    if not capture.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "ingest.py"), "--generate", str(capture),
                        "--packets", str(args.packets), "--seed", str(args.seed)], check=True)
    with tempfile.TemporaryDirectory(dir=OUT_DIR) as tmp:
        work = Path(tmp)
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.rev, "pcapvision"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for run in range(args.runs):
            for side, tree in (("before", before), ("after", REPO)):
                results[side].append(measure(tree, capture, work))
                print(f"run {run + 1} {side}: {results[side][-1]}", file=sys.stderr)
    print(f"capture: {args.packets:,} packets ({capture.stat().st_size / 1e6:,.0f} MB), {args.runs} runs each, "
          f"before = {args.rev}, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| side | CPU s min | CPU s median | CPU s max | wall s median | peak RSS MiB | flows |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for side, rows in results.items():
        cpu = [r["cpu"] for r in rows]
        print(f"| {side} | {min(cpu):.2f} | {statistics.median(cpu):.2f} | {max(cpu):.2f} | "
              f"{statistics.median(r['wall'] for r in rows):.2f} | {max(r['rss_mib'] for r in rows):,.0f} | "
              f"{rows[0]['flows']:,} |")


if __name__ == "__main__":
    main()
