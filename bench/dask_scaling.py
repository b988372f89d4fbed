"""Dask scaling: ingest + imaging of many captures on 1 and 2 Dask workers, beside the local executor.

    .venv/bin/python bench/dask_scaling.py                       # sample_pcaps (20 captures)
    .venv/bin/python bench/dask_scaling.py --captures ../shared/captures --workers 1 2 --repeat 2

For each configuration: wall seconds of ingest (one task per capture) and of imaging (one task
per flows part), packets/s overall and per worker, and a check that every Dask table equals the
local executor's (rows and values, schema metadata aside). Cluster start-up is timed apart: on a
real cluster it is paid once, not per job. The local executor (one process) is the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcapvision.executor import image_captures, ingest_captures  # noqa: E402
from pcapvision.ingest import Labeler  # noqa: E402
from pcapvision.io import library_versions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _tables(flows: Path, images: Path) -> tuple[dict[str, object], object]:
    parts = {p.name: pq.read_table(p).replace_schema_metadata(None) for p in sorted(flows.glob("*.parquet"))}
    return parts, pq.read_table(images).replace_schema_metadata(None)


def _one(captures: list[str], labeler: Labeler | None, work: Path, executor: str, scheduler: str | None) -> dict:
    flows, images = work / "flows", work / "images.parquet"
    t0 = time.perf_counter()
    summary = ingest_captures(captures, flows, labeler=labeler, executor=executor, scheduler=scheduler, quiet=True)
    t1 = time.perf_counter()
    image_captures(flows, images, executor=executor, scheduler=scheduler, quiet=True)
    t2 = time.perf_counter()
    return {"ingest_s": t1 - t0, "image_s": t2 - t1, "packets": summary.packets, "flows": summary.flows,
            "files_failed": len(summary.files_failed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captures", default=str(ROOT / "sample_pcaps"), help="capture directory")
    parser.add_argument("--labels", default=None, help="label rules (default: labels.csv in --captures, if any)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts to time")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (best is reported)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    from distributed import LocalCluster

    from pcapvision.ingest import discover_captures

    captures = [os.fspath(p) for p in discover_captures([args.captures])]
    labels = Path(args.labels) if args.labels else Path(args.captures) / "labels.csv"
    labeler = Labeler.from_rules_csv(labels) if labels.is_file() else None
    results = []
    with tempfile.TemporaryDirectory(prefix="pcapvision-dask-bench-") as tmp:
        base = Path(tmp)

        def timed(name: str, executor: str, scheduler: str | None, workers: int, startup: float | None) -> dict:
            best = None
            for i in range(args.repeat):
                work = base / f"{name}-{i}"
                row = _one(captures, labeler, work, executor, scheduler)
                row["tables"] = _tables(work / "flows", work / "images.parquet")
                if best is None or row["ingest_s"] + row["image_s"] < best["ingest_s"] + best["image_s"]:
                    best = row
            total = best["ingest_s"] + best["image_s"]
            best.update(name=name, workers=workers, startup_s=startup, total_s=total,
                        packets_per_s=best["packets"] / total, packets_per_s_per_worker=best["packets"] / total / workers)
            return best

        local = timed("local executor (1 process)", "local", None, 1, None)
        results.append(local)
        for n in args.workers:
            t0 = time.perf_counter()
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                startup = time.perf_counter() - t0
                row = timed(f"dask, {n} worker{'s' * (n > 1)}", "dask", cluster.scheduler_address, n, startup)
            flows_same = row["tables"][0].keys() == local["tables"][0].keys() and all(
                row["tables"][0][k].equals(v) for k, v in local["tables"][0].items())
            row["equal_to_local"] = bool(flows_same and row["tables"][1].equals(local["tables"][1]))
            results.append(row)
        for row in results:
            row.pop("tables")
        shutil.rmtree(base, ignore_errors=True)

    if args.json:
        print(json.dumps({"captures": len(captures), "results": results, "versions": library_versions()}, indent=2))
        return
    print(f"{len(captures)} captures from {args.captures}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| executor | start-up s | ingest s | image s | total s | packets/s | packets/s per worker | equal to local |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        startup = "-" if r["startup_s"] is None else f"{r['startup_s']:.1f}"
        same = "(baseline)" if "equal_to_local" not in r else ("yes" if r["equal_to_local"] else "NO")
        print(f"| {r['name']} | {startup} | {r['ingest_s']:.2f} | {r['image_s']:.2f} | {r['total_s']:.2f} | "
              f"{r['packets_per_s']:,.0f} | {r['packets_per_s_per_worker']:,.0f} | {same} |")


if __name__ == "__main__":
    main()
