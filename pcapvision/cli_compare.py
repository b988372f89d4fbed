"""Command-line subcommands `compare` and `image import` (argument parsing only), registered by cli.py."""

from __future__ import annotations

import argparse
from typing import Any

from pcapvision.choices import COMPARE_ARCHITECTURES, COMPARE_REPRESENTATIONS


def add_compare(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser, formatter: Any) -> None:
    parser = subparsers.add_parser(
        "compare", parents=[common], formatter_class=formatter,
        help="which representation x architecture wins, beside baselines and a statistics reference",
        description="Train every (representation x architecture) with several seeds on one shared leak-free split\n"
                    "(whole capture/server groups to train, validation or test; the same test groups for all),\n"
                    "beside the trivial baselines and a per-flow statistics model (gradient-boosted trees), and\n"
                    "write OUT/leaderboard.csv, OUT/leaderboard.html (with a plain verdict) and OUT/compare.json.\n"
                    "The best model and the best baseline are chosen on the validation groups, never on test.\n"
                    "Details in docs/compare.md. Exit codes: 0 ok; 1 bad input; 2 usage error.",
    )
    parser.add_argument("source", metavar="IMAGES_OR_FLOWS",
                        help="a flows table (every --reprs is rendered from it) or an images table (its own representation)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--reprs", nargs="+", default=list(COMPARE_REPRESENTATIONS), metavar="NAME", help="representations")
    parser.add_argument("--archs", nargs="+", default=list(COMPARE_ARCHITECTURES), metavar="ARCH",
                        help="architectures (cnn, cnn-embed, cnn1d)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per entry (weights, shuffling; the split stays)")
    parser.add_argument("--epochs", type=int, default=12, help="maximum epochs (early stopping on validation loss)")
    parser.add_argument("--target", choices=("label", "family"), default="label", help="class column")
    parser.add_argument("--group-by", choices=("capture", "server"), default="capture",
                        help="split unit when rendering a flows table: source capture or server address")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the shared group split")
    parser.add_argument("--positive-class", default=None, metavar="CLASS",
                        help="two-class target: the class whose F1 and FPR are reported (default: 'malicious')")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.compare import compare

        record = compare(args.source, args.output, reprs=args.reprs, archs=args.archs, seeds=args.seeds,
                         epochs=args.epochs, target=args.target, group_by=args.group_by, split_seed=args.split_seed,
                         positive_class=args.positive_class, quiet=args.quiet)
        print(record["verdict"]["text"])
        print(f"leaderboard: {args.output}/leaderboard.csv, {args.output}/leaderboard.html")
        return 0

    parser.set_defaults(handler=run)


def add_image_import(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser, formatter: Any) -> None:
    parser = subparsers.add_parser(
        "image-import", prog="pcapvision image import", parents=[common], formatter_class=formatter,
        help="(also 'image import') IDX / npz / PNG-folder images -> images table",
        description="Import images made by other tools into an images table (same dedup and conflict rules):\n"
                    "  IDX: SRC is the images file (gzip or not); its labels file is found beside it by name\n"
                    "       (t10k-images-idx3-ubyte.gz -> t10k-labels-idx1-ubyte.gz) or given with --labels;\n"
                    "  npz: arrays x (N,28,28) uint8 or floats in [0,1], y, optional groups (split groups);\n"
                    "  PNG: SRC/<class>/*.png, 28x28 (converted to grayscale).\n"
                    "Without groups every image is its own split group (a warning: only a random split is possible).\n"
                    "Exit codes: 0 ok; 1 bad input; 2 usage error.",
    )
    parser.add_argument("src", metavar="SRC", help="IDX images file, .npz file, or folder of class folders of PNGs")
    parser.add_argument("-o", "--output", required=True, metavar="IMAGES", help="images table to write (*.parquet)")
    parser.add_argument("--labels", default=None, metavar="IDX", help="IDX labels file (default: found beside SRC)")
    parser.add_argument("--format", choices=("auto", "idx", "npz", "png"), default="auto", help="input format")
    parser.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=True,
                        help="keep one row per distinct image; drop every row of an image seen with several labels")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.imaging import import_images

        summary = import_images(args.src, args.output, labels=args.labels, format=args.format, dedup=args.dedup)
        print(summary.format())
        return 0

    parser.set_defaults(handler=run)
