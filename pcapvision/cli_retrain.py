"""Command-line subcommands `retrain` and `models` (argument parsing only), registered by cli.py."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pcapvision.choices import ARCHITECTURES, LABEL_FORMATS
from pcapvision.errors import LockedError, ParameterError, PcapvisionError


def add_retrain(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser, formatter: Any) -> None:
    parser = subparsers.add_parser(
        "retrain", parents=[common], formatter_class=formatter,
        help="scheduled retraining: new captures -> challenger -> gates -> promote or keep the champion",
        description="One idempotent run for cron or a systemd timer: ingest and image the captures new since the\n"
                    "last run into the registry, train a challenger with the champion's configuration, compare\n"
                    "both on the registry's fixed holdout (plus FGSM), promote only when every gate passes,\n"
                    "report drift, and print exactly one JSON line on stdout. See docs/retraining.md.\n"
                    "Exit codes: 0 promoted or nothing to do; 1 the run failed (bad input); 2 usage error;\n"
                    "3 internal error (a bug); 4 another run holds the registry's lock; 5 the challenger was\n"
                    "rejected by a gate.",
    )
    parser.add_argument("--registry", required=True, metavar="REG", help="registry directory (created on first use)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="CAPTURES_DIR", help="directory of labelled captures (grows night by night)")
    source.add_argument("--images", metavar="IMAGES", help="take this images table instead of ingesting captures")
    parser.add_argument("--labels", metavar="FILE", help="label rules (default: labels.csv at the top of --data), or "
                        "ground truth in --labels-format")
    parser.add_argument("--labels-format", default="rules", choices=("rules", *LABEL_FORMATS),
                        help="format of --labels: a rules CSV, or ground truth imported with the defaults of "
                             "'pcapvision labels import'")
    parser.add_argument("--config", metavar="retrain.toml", help="gates, holdout, drift and first-run training settings")
    training = parser.add_argument_group("training (override the champion's, or the config's on the first run)")
    training.add_argument("--target", choices=("label", "family"), default=None, help="class column")
    training.add_argument("--arch", choices=ARCHITECTURES, default=None, help="network architecture")
    training.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    training.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    training.add_argument("--batch-size", type=int, default=None, help="images per batch")
    training.add_argument("--learning-rate", type=float, default=None, help="optimizer learning rate")
    training.add_argument("--seed", type=int, default=None, help="seed of splits, shuffling and weights")
    training.add_argument("--threshold", type=float, default=None, help="binary models: threshold on p(malicious)")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.cli import EXIT_INPUT_FAILED, EXIT_INTERNAL, EXIT_USAGE, _one_line
        from pcapvision.retrain import EXIT_LOCKED, load_config, monitoring_line, retrain

        overrides = {"target": args.target, "arch": args.arch, "epochs": args.epochs, "patience": args.patience,
                     "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed,
                     "threshold": args.threshold}
        try:
            record = retrain(args.registry, args.data, images=args.images, labels=args.labels,
                             labels_format=args.labels_format,
                             config=load_config(args.config), training=overrides, quiet=args.quiet)
        except LockedError as exc:
            print(monitoring_line({"status": "locked", "exit_code": EXIT_LOCKED, "registry": args.registry,
                                   "error": str(exc)}))
            print(f"pcapvision retrain: {exc}", file=sys.stderr)
            return EXIT_LOCKED
        except Exception as exc:
            code = EXIT_INPUT_FAILED if isinstance(exc, (PcapvisionError, OSError)) else EXIT_INTERNAL
            print(monitoring_line({"status": "failed", "exit_code": EXIT_USAGE if isinstance(exc, ParameterError) else code,
                                   "registry": args.registry, "error": _one_line(exc)}))
            raise
        print(monitoring_line(record))
        return int(record["exit_code"])

    parser.set_defaults(handler=run)


def add_models(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser, formatter: Any) -> None:
    parser = subparsers.add_parser(
        "models", parents=[common], formatter_class=formatter,
        help="the model registry by hand: list, show, promote, rollback",
        description="Inspect and steer a registry written by 'pcapvision retrain'. 'promote' and 'rollback' take\n"
                    "the registry's lock (exit 4 while a retrain runs) and switch the champion atomically.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("list", "every version with its holdout figures and role"),
                       ("show", "the full record of one version (JSON)"),
                       ("promote", "make version N the champion (no gate is checked)"),
                       ("rollback", "make the previous champion the champion again")):
        sub = actions.add_parser(name, parents=[common], formatter_class=formatter, help=text, description=text)
        sub.add_argument("--registry", required=True, metavar="REG", help="registry directory")
        if name in ("show", "promote"):
            sub.add_argument("version", type=int, metavar="N", help="version number")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.cli import EXIT_OK
        from pcapvision.retrain import (
            EXIT_LOCKED,
            format_versions,
            list_versions,
            promote,
            rollback,
            show_version,
        )

        try:
            if args.action == "list":
                print(format_versions(list_versions(args.registry)))
            elif args.action == "show":
                print(json.dumps(show_version(args.registry, args.version), indent=2, default=str))
            else:
                aliases = promote(args.registry, args.version) if args.action == "promote" else rollback(args.registry)
                print(f"{args.registry}: champion is version {aliases['champion']}; previous {aliases['previous']}")
        except LockedError as exc:
            print(f"pcapvision models: {exc}", file=sys.stderr)
            return EXIT_LOCKED
        return EXIT_OK

    parser.set_defaults(handler=run)
