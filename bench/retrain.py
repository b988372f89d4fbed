"""Nightly retrain on simulated nights: what each step of 'pcapvision retrain' costs, and what it decided.

Night N adds a synth corpus (seed N, ``--flows`` connections, 8 hosts) to one data directory;
night ``--flip`` carries flipped labels. Prints one row per run: status, new groups, the
challenger's and champion's holdout figures, failed gates and seconds per step.

    .venv/bin/python bench/retrain.py [--nights 3] [--flip 3] [--flows 300] [--epochs 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--flip", type=int, default=3, help="night whose labels are flipped (0: none)")
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()

    from pcapvision.console import setup_logging
    from pcapvision.retrain import Gates, RetrainConfig, retrain
    from tests.retrain.nights import add_night

    setup_logging(quiet=True)
    root = Path(args.out or tempfile.mkdtemp(prefix="retrain-bench-"))
    data, corpora, reg = root / "data", root / "corpora", root / "registry"
    # Tolerances for a ~90-row holdout (see tests/retrain/test_nights.py); baseline gate off.
    config = RetrainConfig(training={"epochs": args.epochs, "seed": 0}, gates=Gates(
        max_f1_drop=0.08, max_fpr_rise=0.05, max_robust_accuracy_drop=0.08, beat_baselines=False))
    print(f"| night | status | new groups | challenger F1 / FPR / FGSM acc | champion F1 / FPR / FGSM acc | "
          "failed gates | seconds (ingest+image, train, evaluate x2, total) |")
    print("|---|---|---|---|---|---|---|")
    for night in range(1, args.nights + 2):
        if night <= args.nights:
            add_night(data, corpora, night, flip=night == args.flip, flows=args.flows)
        record = retrain(reg, data, config=config, quiet=True)
        metrics = record.get("metrics") or {}

        def figures(who: str) -> str:
            f = metrics.get(who)
            return f"{f['f1']:.3f} / {f['fpr']:.3f} / {f['robust_accuracy']:.3f}" if f else "-"

        s = record["seconds"]
        steps = ", ".join(f"{s.get(k, 0):.0f}" for k in ("ingest_and_image", "train", "evaluate_challenger",
                                                        "evaluate_champion", "total"))
        label = f"{night}{' (flipped)' if night == args.flip else ''}" if night <= args.nights else "again"
        print(f"| {label} | {record['status']} | {len(record.get('new_groups', []))} | {figures('challenger')} | "
              f"{figures('champion')} | {'; '.join(g.split(':')[0] for g in record.get('failed_gates', [])) or '-'} | "
              f"{steps} |")
    print(json.dumps({"registry": str(reg)}))


if __name__ == "__main__":
    main()
