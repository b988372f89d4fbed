"""Command-line interface: argument parsing only; every command calls a library function.

Exit codes: 0 success; 1 some inputs failed or an input was bad (the rest was written);
2 usage error (bad option or parameter value); 3 internal error (a bug in pcapvision: the
traceback is shown, please report it; work on other inputs is kept).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pcapvision import __version__
from pcapvision.choices import ARCHITECTURES, LABEL_FORMATS, ON_HOLE, READERS, REPRESENTATIONS
from pcapvision.console import setup_logging
from pcapvision.errors import ParameterError, PcapvisionError

if TYPE_CHECKING:
    from pcapvision.ingest import ImportOptions, MatchReport

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in --help and keep the description's line breaks."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose description may be computed only when its help is shown."""

    def __init__(self, *args: Any, describe: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._describe = describe

    def format_help(self) -> str:
        if self._describe is not None:
            self.description, self._describe = self._describe(), None
        return super().format_help()


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output control")
    group.add_argument("--quiet", action="store_true", help="no progress bars or informational messages")
    group.add_argument("--debug", action="store_true", help="debug logging and full tracebacks on errors")
    return common


# --- subcommands -------------------------------------------------------------------------------
# Each stage adds one ``_add_<stage>(subparsers, common)`` function below and registers it in
# ``_SUBCOMMANDS``. The handler it sets (``set_defaults(handler=...)``) receives the parsed
# arguments and returns an exit code.


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]] = []


def _add_ingest(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "ingest", parents=[common], formatter_class=_Formatter,
        help="packet captures -> flows table (Parquet)",
        description="Read pcap/pcapng captures (plain or gzip) into a table of bidirectional flows.\n"
                    "Exit codes: 0 all inputs ok; 1 some inputs failed (the rest is written); 2 usage error;\n"
                    "3 internal error while reading some input (a bug: traceback shown; the rest is written).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="capture files, directories (searched recursively for *.pcap, *.pcapng, *.cap, "
                             "optionally .gz) or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", default=argparse.SUPPRESS,
                        help="a *.parquet file holding all flows, or a dataset directory with one part per "
                             "capture (<sha256[:16]>.parquet; re-runs skip captures already there with the same "
                             "parameters and labels, and re-ingest the others)")
    reading = _add_ingest_options(parser)
    reading.add_argument("--jobs", type=int, default=1, metavar="N",
                         help="worker processes (parallel over files), or LocalCluster workers with --executor dask")
    _executor_options(reading)
    reading.add_argument("--force", action="store_true",
                         help="re-ingest captures whose part already exists in a dataset directory, even when "
                              "made with the same parameters and labels")
    labels = parser.add_argument_group("labels (default: flows unlabeled)")
    labels.add_argument("--label", metavar="NAME", help="label every flow NAME")
    labels.add_argument("--family", metavar="NAME", help="with --label: family of every flow")
    labels.add_argument("--labels", metavar="RULES.csv", help="label flows by the rules of this CSV file "
                        "(first match wins; format in docs/contracts.md)")
    labels.add_argument("--unlabeled", choices=("keep", "drop"), default="keep",
                        help="with --labels: keep flows no rule matches (label null) or drop them")
    labels.add_argument("--default-label", metavar="NAME", help="with --labels: label of flows no rule matches")
    labels.add_argument("--default-family", metavar="NAME", help="with --default-label: their family")
    labels.add_argument("--labels-format", default="rules", choices=("rules", *LABEL_FORMATS),
                        help="format of --labels: a rules CSV, or ground truth to import (written as "
                             "OUT.rules.csv, match report OUT.rules.match.json; see 'pcapvision labels import')")
    _add_label_import_options(parser)
    parser.set_defaults(handler=_run_ingest)


def _executor_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--executor", choices=("local", "dask"), default="local",
                       help="run per capture in local processes, or as Dask tasks (needs pcapvision[dask]; "
                            "see docs/scale-out.md)")
    group.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       help="with --executor dask: a running scheduler (default: a LocalCluster of --jobs workers)")


# The options of 'ingest' that shape the flows (IngestOptions fields): also taken by 'predict'.
# (flag, IngestOptions field, type, default, metavar or choices, help)
_INGEST_OPTIONS = (
    ("--idle-timeout", "idle_timeout_s", float, 120.0, "SECONDS", "a flow ends after this long without a packet"),
    ("--active-timeout", "active_timeout_s", float, 1800.0, "SECONDS", "a flow is split after lasting this long"),
    ("--max-bytes", "max_bytes", int, 4096, "N", "payload bytes kept per flow (payload and each direction; at most 1 MiB)"),
    ("--max-packets", "max_packets", int, 64, "N", "packets kept in the per-packet lists (packet_time_ms, ...)"),
    ("--on-hole", "on_hole", str, "stop", ON_HOLE,
     "TCP payload at a hole the capture missed: stop there, or skip it (close the gap, mark the join in "
     "*_payload_holes) and keep the bytes after it"),
    ("--reader", "reader", str, "auto", READERS,
     "capture decoder: auto (compiled fast path, dpkt fallback), dpkt, or scapy (slow cross-check)"),
    ("--chunk-packets", "chunk_packets", int, 65536, "N",
     "packets decoded per chunk (memory holds one chunk plus the open flows)"),
)


def _add_ingest_options(parser: argparse.ArgumentParser, *, from_model: bool = False) -> argparse._ArgumentGroup:
    """Add the flow and reading options of 'ingest' (``from_model``: no defaults, a given option
    overrides the model's recorded value); returns the 'reading' group."""
    suffix = " (default: the values recorded with the model)" if from_model else ""
    flows = parser.add_argument_group("flows" + suffix)
    reading = parser.add_argument_group("reading" + suffix)
    for flag, field, kind, default, shape, text in _INGEST_OPTIONS:
        group = reading if field in ("reader", "chunk_packets") else flows
        extra = {"choices": shape} if isinstance(shape, tuple) else {"metavar": shape}
        group.add_argument(flag, dest=field, type=kind, help=text,
                           default=argparse.SUPPRESS if from_model else default, **extra)
    return reading


def _ingest_options_given(args: argparse.Namespace) -> dict[str, object]:
    """The IngestOptions fields set on the command line (all of them for 'ingest')."""
    return {field: getattr(args, field) for _, field, *_ in _INGEST_OPTIONS if hasattr(args, field)}


def _run_ingest(args: argparse.Namespace) -> int:
    from pcapvision.executor import ingest_captures
    from pcapvision.ingest import IngestOptions, Labeler

    options = IngestOptions(**_ingest_options_given(args))
    if args.label is not None and args.labels is not None:
        raise ParameterError("--label and --labels cannot be combined: label every flow, or label by rules")
    if args.family is not None and args.label is None:
        raise ParameterError("--family needs --label (with --labels, families come from the rules file)")
    if args.labels is None and (args.default_label or args.default_family or args.unlabeled != "keep"):
        raise ParameterError("--default-label, --default-family and --unlabeled need --labels")
    labeler = None
    imported = _import_ingest_labels(args)
    if args.label is not None:
        labeler = Labeler.from_label(args.label, family=args.family)
    elif args.labels is not None:
        rules = args.labels if imported is None else imported.rules_path
        labeler = Labeler.from_rules_csv(rules, unlabeled=args.unlabeled, default_label=args.default_label,
                                         default_family=args.default_family)
    summary = ingest_captures(args.paths, args.output, options, labeler=labeler, executor=args.executor,
                              scheduler=args.scheduler, jobs=args.jobs, quiet=args.quiet, force=args.force)
    print(summary.format())
    if imported is not None and (summary.files_ok or summary.files_skipped_already_ingested):
        print(imported.with_flows(args.output).format())
    failed = summary.files_failed or (imported is not None and imported.failed)
    return EXIT_INTERNAL if summary.internal_errors else EXIT_INPUT_FAILED if failed else EXIT_OK


_SUBCOMMANDS.append(_add_ingest)


# --- labels: ground-truth importers (pcapvision.ingest.importers) --------------------------------
_IMPORT_DEFAULTS = {"tz": "UTC", "time_slack": 1.0, "clock": "auto", "min_severity": None, "uid_labels": None,
                    "class_level": None, "class_regex": None, "class_map": None}


def _add_label_import_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("label import (formats other than rules; docs/ingest-labels.md)")
    group.add_argument("--tz", default="UTC", metavar="ZONE",
                       help="cicflowmeter, binetflow: IANA zone of timestamps without one (the capture site's, "
                            "e.g. America/Halifax)")
    group.add_argument("--time-slack", type=float, default=1.0, metavar="SECONDS",
                       help="tolerance on both sides of each record's time window")
    group.add_argument("--clock", choices=("auto", "24", "12"), default="auto",
                       help="cicflowmeter: hours of 'dd/mm/yyyy h:mm'; auto = 12-hour without AM/PM when no hour "
                            "is 0 or above 12 (both readings kept, the match report says which matched)")
    group.add_argument("--min-severity", type=int, metavar="N",
                       help="suricata: keep alerts of severity N or more severe (1 is the most severe)")
    group.add_argument("--uid-labels", metavar="CSV", help="zeek: labels from a CSV keyed by uid "
                       "(columns uid, label[, family]) instead of the log's label column")
    group.add_argument("--class-level", type=int, metavar="N",
                       help="folders: the class is the N-th directory below SRC (default 1)")
    group.add_argument("--class-regex", metavar="RE",
                       help="folders: the class is the first group (or group 'class') of RE in the relative path")
    group.add_argument("--class-map", metavar="CSV",
                       help="folders: CSV with columns class,label (else well-known names: malware, benign...)")


def _import_options(args: argparse.Namespace, **extra: object) -> ImportOptions:
    from pcapvision.ingest import ImportOptions

    return ImportOptions(tz=args.tz, time_slack_s=args.time_slack, clock=args.clock, min_severity=args.min_severity,
                         uid_labels=args.uid_labels, class_level=args.class_level, class_regex=args.class_regex,
                         class_map=args.class_map, **extra)


def _import_ingest_labels(args: argparse.Namespace) -> MatchReport | None:
    """With ``ingest --labels FILE --labels-format FMT``: import FILE as OUT.rules.csv first."""
    from pcapvision.ingest import import_labels, rules_path_for

    if args.labels_format == "rules":
        given = [f"--{k.replace('_', '-')}" for k, v in _IMPORT_DEFAULTS.items() if getattr(args, k) != v]
        if given:
            raise ParameterError(f"{', '.join(given)}: only used to import ground truth "
                                 "(--labels FILE --labels-format FMT, FMT other than rules)")
        return None
    if args.labels is None:
        raise ParameterError("--labels-format needs --labels FILE")
    return import_labels([args.labels], args.labels_format, rules_path_for(args.output), _import_options(args))


def _add_labels(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "labels", parents=[common], formatter_class=_Formatter, help="label tools: import other tools' ground truth as rules",
        description="Label tools. 'pcapvision labels import --help' for the importers.")
    commands = parser.add_subparsers(dest="labels_command", metavar="LABELS_COMMAND", required=True)
    importer = commands.add_parser(
        "import", parents=[common], formatter_class=_Formatter,
        help="ground truth (CICFlowMeter, binetflow, Zeek, Suricata, class folders) -> rules CSV + match report",
        description="Turn another tool's ground truth into a label rules CSV for 'ingest --labels', and write\n"
                    "RULES.match.json: records read and skipped, conflicts, and with --flows how many records\n"
                    "matched a flow (by reason when not) and which labels the flows get. Formats and traps in\n"
                    "docs/ingest-labels.md. Exit codes: 0 ok; 1 a file could not be read (the rest is written);\n"
                    "2 usage error.")
    importer.add_argument("sources", nargs="+", metavar="FILE",
                          help="ground-truth files or quoted glob patterns (for --format folders: the SRC directory)")
    importer.add_argument("--format", required=True, choices=LABEL_FORMATS, dest="label_format",
                          help="what the files are")
    importer.add_argument("-o", "--output", required=True, metavar="RULES.csv", help="rules CSV to write")
    importer.add_argument("--flows", metavar="FLOWS",
                          help="flows table (from 'pcapvision ingest') to match the records against")
    importer.add_argument("--default-label", metavar="NAME",
                          help="a last catch-all rule: label of flows no record labels (suricata: the flows "
                               "without alerts)")
    importer.add_argument("--default-family", metavar="NAME", help="with --default-label: their family")
    _add_label_import_options(importer)

    def run(args: argparse.Namespace) -> int:
        from pcapvision.ingest import import_labels

        options = _import_options(args, default_label=args.default_label, default_family=args.default_family)
        report = import_labels(args.sources, args.label_format, args.output, options, flows=args.flows)
        print(report.format())
        return EXIT_INPUT_FAILED if report.failed else EXIT_OK

    importer.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_labels)


def _image_description() -> str:
    # Imported only when the help is shown: pcapvision.imaging loads numpy, pyarrow and numba.
    from pcapvision.imaging import REPRESENTATIONS as REGISTRY

    param_help = "\n".join(
        f"  {name}: {cls.summary}\n" + "".join(f"    {p.name} (default {p.default!r}): {p.help}\n" for p in cls.param_specs)
        for name, cls in REGISTRY.items()
    )
    return ("Render each flow of a flows table as a 28x28 image; write an images table (Parquet) and\n"
            "IMAGES.summary.json (rows in/out, skipped by reason, duplicates, label conflicts, classes).\n\n"
            f"Representations and their --param options:\n{param_help}\n"
            "Images made by other tools (IDX, npz, PNG folders): 'pcapvision image import --help'.\n"
            "Details in docs/imaging.md. Exit codes: 0 ok; 1 bad input; 2 usage error.")


def _add_image(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "image", parents=[common], formatter_class=_Formatter,
        help="flows table -> images table (28x28 uint8 per flow)", describe=_image_description,
    )
    parser.add_argument("flows", metavar="FLOWS", help="flows table: Parquet file or dataset directory")
    parser.add_argument("-o", "--output", required=True, metavar="IMAGES", help="images table to write (*.parquet)")
    parser.add_argument("--repr", dest="representation", choices=REPRESENTATIONS, default="payload",
                        help="what a pixel means (see above)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a representation parameter (repeatable), e.g. --param max_bytes=1500")
    parser.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=True,
                        help="keep one row per distinct image; drop every row of an image that occurs with "
                             "more than one (label, family)")
    parser.add_argument("--mask-tls-sni", action="store_true",
                        help="zero TLS SNI and certificate-name bytes in the payload before rendering")
    parser.add_argument("--group-by", choices=("capture", "server"), default="capture",
                        help="split_group column: source capture (source_sha256) or server address (dst_ip)")
    parser.add_argument("--preview", metavar="PNG", default=None, help="also draw sample images per label into PNG")
    parser.add_argument("--preview-per-class", type=int, default=8, metavar="N", help="images per label in --preview")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="with --executor dask: LocalCluster workers")
    _executor_options(parser)

    def run(args: argparse.Namespace) -> int:
        from pcapvision.executor import image_captures
        from pcapvision.imaging import REPRESENTATIONS as REGISTRY

        pairs: dict[str, str] = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ParameterError(f"The 'param' option must be KEY=VALUE. Got {item!r} instead.")
            pairs[key.strip()] = value.strip()
        params = REGISTRY[args.representation].parse_params(pairs)
        summary = image_captures(args.flows, args.output, args.representation, params, executor=args.executor,
                                 scheduler=args.scheduler, jobs=args.jobs, dedup=args.dedup,
                                 mask_tls_sni=args.mask_tls_sni, group_by=args.group_by, preview=args.preview,
                                 preview_per_class=args.preview_per_class, quiet=args.quiet)
        print(summary.format())
        return EXIT_OK

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_image)


def _add_train(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train", parents=[common], formatter_class=_Formatter,
        help="train the CNN (or MLP) on an images table or on MNIST -> model directory",
        description="Train on an images table (stratified, group-aware train/validation/test split by split_group)\n"
                    "or, with --dataset mnist, on MNIST. Writes MODEL_DIR/model.keras, metadata.json,\n"
                    "split_manifest.parquet (images tables) and MODEL_DIR/report/{metrics.json,report.html}.",
    )
    parser.add_argument("images", nargs="?", metavar="IMAGES",
                        help="images table (Parquet file or dataset directory); omit with --dataset mnist")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to write")
    parser.add_argument("--dataset", choices=("images", "mnist"), default="images",
                        help="train on the IMAGES table, or on MNIST (the proof of concept)")
    parser.add_argument("--mnist-file", metavar="PATH",
                        help="with --dataset mnist: Keras mnist.npz, a directory of the four IDX files (gzip or not), or "
                             "an .npz with x and y (split 80/20 stratified); default: keras.datasets.mnist.load_data(), "
                             "then the MNIST sample bundled with pcapvision when offline")
    parser.add_argument("--no-download", action="store_true",
                        help="with --dataset mnist and no --mnist-file: do not try keras.datasets (use the bundled sample)")
    parser.add_argument("--target", choices=("label", "family"), default="label",
                        help="images tables: class column (label: binary malicious/normal; family: multi-class)")
    model = parser.add_argument_group("model and training")
    model.add_argument("--arch", choices=ARCHITECTURES, default="cnn",
                       help="cnn: Conv32-Pool-Conv64-Pool-Dense128, Adam; mlp: 784-128-64-n ReLU, SGD lr 0.01; "
                            "cnn-embed: the cnn after a learned 8-d embedding of each byte value; "
                            "cnn1d: Conv1D(32,25)-Pool3-Conv1D(64,25)-Pool3-Dense128 over the 784 bytes in order")
    model.add_argument("--epochs", type=int, default=20, help="maximum epochs (early stopping on validation loss)")
    model.add_argument("--patience", type=int, default=3, help="epochs without validation-loss improvement before stopping")
    model.add_argument("--batch-size", type=int, default=128, help="images per training batch")
    model.add_argument("--learning-rate", type=float, default=None,
                       help="optimizer learning rate (default: 0.001 for cnn/Adam, 0.01 for mlp/SGD)")
    model.add_argument("--seed", type=int, default=0, help="seed of splits, shuffling and weight initialisation")
    split = parser.add_argument_group("split (images tables)")
    split.add_argument("--test-fraction", type=float, default=0.2, help="approximate fraction of images held out for test")
    split.add_argument("--validation-fraction", type=float, default=0.1,
                       help="approximate fraction of images (of the training data for MNIST) used for early stopping")
    split.add_argument("--threshold", type=float, default=0.5,
                       help="binary models: operating threshold on p(malicious)")
    split.add_argument("--positive-class", metavar="CLASS", default=None,
                       help="two-class models: the class that is positive (malicious); default: the class named 'malicious' (any case)")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.classify import train_images, train_mnist

        common_kw = dict(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         learning_rate=args.learning_rate, patience=args.patience,
                         validation_fraction=args.validation_fraction)
        if args.dataset == "mnist":
            if args.images is not None:
                raise ParameterError("--dataset mnist takes no IMAGES argument (use --mnist-file for a file)")
            if args.positive_class is not None:
                raise ParameterError("--positive-class applies to two-class images tables, not to MNIST")
            record = train_mnist(args.output, mnist_file=args.mnist_file, allow_download=not args.no_download, **common_kw)
        else:
            if args.images is None:
                raise ParameterError("IMAGES is required (or pass --dataset mnist)")
            if args.mnist_file is not None:
                raise ParameterError("--mnist-file needs --dataset mnist")
            record = train_images(args.images, args.output, target=args.target, test_fraction=args.test_fraction,
                                  threshold=args.threshold, positive_class=args.positive_class, **common_kw)
        test = record["test"]
        print(f"{args.output}: test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro']['f1']:.4f} "
              f"on {test['n_samples']} images; report {args.output}/report/report.html")
        return EXIT_OK  # baseline warnings were logged to stderr

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_train)


def _add_evaluate(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "evaluate", parents=[common], formatter_class=_Formatter,
        help="metrics, baselines and report of a model on data",
        description="Evaluate MODEL_DIR on DATA: 'mnist' (the model's own MNIST test split) or an images table.\n"
                    "On the model's training table the stored test split is used; on any other table every row\n"
                    "except those the model saw in training or validation (counted and reported).\n"
                    "Writes metrics.json and report.html.",
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory written by 'pcapvision train'")
    parser.add_argument("data", metavar="DATA", help="'mnist' or an images table (Parquet file or dataset directory)")
    parser.add_argument("-o", "--output", metavar="DIR", default=None,
                        help="report directory (default: MODEL_DIR/evaluation-<DATA name>)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="binary models: operating threshold on p(malicious) (default: the model's)")
    parser.add_argument("--positive-class", metavar="CLASS", default=None,
                        help="two-class models: the positive (malicious) class (default: the one stored with the model)")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.classify import evaluate

        record = evaluate(args.model, args.data, out_dir=args.output, threshold=args.threshold,
                          positive_class=args.positive_class)
        test = record["test"]
        line = f"accuracy {test['accuracy']:.4f}, macro-F1 {test['macro']['f1']:.4f} on {test['n_samples']} images"
        if "positive" in test:
            pos = test["positive"]
            line += (f"; {pos['class']}: precision {pos['precision']:.4f}, recall {pos['recall']:.4f}, "
                     f"FPR {pos['false_positive_rate'] or 0:.4f} at p>={pos['threshold']:g}")
        print(line)
        for row in record["baselines"]:
            print(f"  baseline {row['baseline']}: accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}")
        return EXIT_OK  # baseline warnings were logged to stderr

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_evaluate)


def _add_predict(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict", parents=[common], formatter_class=_Formatter,
        help="captures -> per-flow verdicts of a traffic model",
        description="Ingest and image PCAP files with the parameters stored in MODEL_DIR, then write one verdict\n"
                    "per flow (predicted class and every class probability) to a Parquet or CSV file.",
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory trained on an images table (with "
                        "--registry: the first capture)")
    parser.add_argument("pcaps", nargs="*", metavar="PCAP", help="capture files (pcap/pcapng, plain or gzip)")
    parser.add_argument("--registry", metavar="REG", default=None,
                        help="score with the current champion of this model registry (then every positional "
                             "argument is a capture); verdicts gain nn_distance and in_distribution")
    parser.add_argument("-o", "--output", required=True, metavar="VERDICTS",
                        help="output file: *.parquet or *.csv")
    parser.add_argument("--threshold", type=float, default=None,
                        help="binary models: operating threshold on p(malicious) (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per inference batch")
    _add_ingest_options(parser, from_model=True)

    def run(args: argparse.Namespace) -> int:
        from pcapvision.classify import predict_pcaps

        model, pcaps, reference = args.model, args.pcaps, None
        if args.registry is not None:
            from pcapvision.retrain import champion_paths

            model, reference = champion_paths(args.registry)
            pcaps = [args.model, *args.pcaps]
        elif not pcaps:
            raise ParameterError("give MODEL_DIR and at least one PCAP (or --registry REG and the captures)")
        verdicts = predict_pcaps(model, pcaps, args.output, threshold=args.threshold, batch_size=args.batch_size,
                                 ingest_options=_ingest_options_given(args), reference=reference)
        counts = verdicts["predicted"].value_counts().to_dict() if len(verdicts) else {}
        line = f"{args.output}: {len(verdicts)} flows; predicted {counts}"
        if "in_distribution" in verdicts:
            scored = verdicts.loc[verdicts["imaged"], "in_distribution"].astype(bool)
            line += f"; {float((~scored).mean()) if len(scored) else 0.0:.1%} unlike the training data"
        print(line)
        failed = verdicts.attrs.get("failed_captures") or {}
        if failed:
            print(f"pcapvision predict: {len(failed)} capture(s) failed: {', '.join(failed)}; the verdicts of the "
                  "others were written", file=sys.stderr)
        return EXIT_INPUT_FAILED if failed else EXIT_OK

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_predict)


def _add_synth(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "synth", parents=[common], formatter_class=_Formatter,
        help="generate labelled encrypted traffic (real TLS) as pcaps + labels.csv",
        description="Generate seeded, labelled normal and malicious TLS traffic: one pcap per simulated host,\n"
                    "labels.csv (rules for 'pcapvision ingest --labels') and synth.json. Families and\n"
                    "difficulty presets are described in docs/synth.md.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--flows", type=int, default=2000, metavar="N",
                        help="TCP connections to generate (port-scan probes included; DNS lookups come on top)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (TLS key material is not seeded)")
    parser.add_argument("--difficulty", choices=("easy", "realistic", "hard"), default="realistic",
                        help="how much normal and malicious traffic overlap, and how lossy the network is")
    parser.add_argument("--mix", default="", metavar="FAMILY=WEIGHT,...",
                        help="re-weight families (unnamed ones keep their default weight; 0 drops one), "
                             "e.g. c2-beacon=0.3,port-scan=0")
    parser.add_argument("--max-flow-kib", type=int, default=64, metavar="KIB",
                        help="cap on a flow's application bytes (long flows end early, downloads shrink)")
    parser.add_argument("--hosts-per-class", type=int, default=None, metavar="N",
                        help="simulated hosts (pcaps) per class; None: flows/300 within [2, 50]")
    parser.add_argument("--loss-rate", type=float, default=None, metavar="P",
                        help="share of data segments lost and retransmitted; None: the difficulty's "
                             "(0, 0.005, 0.02)")
    parser.add_argument("--reorder-rate", type=float, default=None, metavar="P",
                        help="share of data segments captured after their successor; None: the "
                             "difficulty's (0, 0.003, 0.01)")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.synth import generate, parse_mix

        summary = generate(args.output, flows=args.flows, seed=args.seed, difficulty=args.difficulty,
                           mix=parse_mix(args.mix), max_flow_kib=args.max_flow_kib,
                           hosts_per_class=args.hosts_per_class, loss_rate=args.loss_rate,
                           reorder_rate=args.reorder_rate, quiet=args.quiet)
        print(summary.format())
        return EXIT_OK

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_synth)


def _add_robustness(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "robustness", parents=[common], formatter_class=_Formatter,
        help="where a model breaks: distortions, adversarial attacks, fooling images, defences",
        description="Run the robustness suite on MODEL_DIR and write robustness.json, robustness.html and\n"
                    "adversarial_examples.npz to REPORT_DIR. DATA is an images table, or 'mnist' (same as\n"
                    "--dataset mnist) for an MNIST model's own test split. 'quick' runs pixel distortions,\n"
                    "FGSM/PGD/DeepFool sweeps (ART), fooling images and smoothing certification; 'full' adds\n"
                    "PGD-40 with restarts, defences (PGD-AT, fast FGSM-RS, Gaussian noise) and the noise class.\n"
                    "See docs/robustness.md.",
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory written by 'pcapvision train'")
    parser.add_argument("data", metavar="DATA", nargs="?", default=None,
                        help="images table (Parquet file or dataset directory) or 'mnist'")
    parser.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report directory")
    parser.add_argument("--suite", choices=("quick", "full"), default="quick", help="how much to run")
    parser.add_argument("--dataset", choices=("mnist",), default=None,
                        help="evaluate an MNIST model on the test split recorded in its metadata (instead of DATA)")
    parser.add_argument("--mnist-file", metavar="F", default=None,
                        help="MNIST file to rebuild that split from when it moved (its content hash must match)")
    parser.add_argument("--flows", metavar="FLOWS", default=None,
                        help="flows table the images were rendered from: enables network-level distortions "
                             "(skipped with a stated reason without it)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of every study")
    parser.add_argument("--positive-class", metavar="CLASS", default=None,
                        help="two-class models: the malicious (positive) class (default: the one stored with the model)")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.robustness import run_suite

        if args.dataset is not None and args.data not in (None, args.dataset):
            raise ParameterError(f"The 'data' parameter must be omitted with --dataset {args.dataset}. Got {args.data!r} instead.")
        data = args.dataset or args.data
        if data is None:
            raise ParameterError("The 'data' parameter must be an images table or 'mnist' (or --dataset mnist). Got None instead.")
        record = run_suite(args.model, data, args.output, args.suite, mnist_file=args.mnist_file, flows=args.flows,
                           seed=args.seed, positive_class=args.positive_class)
        for row in record["summary"]:
            value = row["value"]
            print(f"{row['measure']}: {value:.4f}" if isinstance(value, float) else f"{row['measure']}: {value}")
        print(f"report: {args.output}/robustness.html")
        return EXIT_OK

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_robustness)


def _add_run(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "run", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the main job: traffic and MNIST models trained, evaluated and attacked, one report",
        description="Run every stage end to end: captures -> OUT/flows -> OUT/images.parquet -> OUT/model, the MNIST\n"
                    "proof of concept (the plain CNN, same training function) -> OUT/mnist-model, the robustness\n"
                    "suite on both, and OUT/report.html. With no arguments it runs on the bundled sample_pcaps and\n"
                    "MNIST sample. Parameters: defaults < --config FILE < options given here ('pcapvision config\n"
                    "show' prints every parameter and its default). Stages whose inputs and parameters did not change\n"
                    "are reused; run.json records the effective configuration.",
    )
    # Every option defaults to None (= not given), so the config file's value stands unless overridden.
    parser.add_argument("captures", nargs="*", default=None, metavar="PATH",
                        help="capture files, directories or globs (default: sample_pcaps)")
    parser.add_argument("--config", metavar="TOML", help="pipeline configuration file")
    parser.add_argument("-o", "--output", metavar="OUT", help="output directory (default: out)")
    parser.add_argument("--labels", metavar="RULES.csv",
                        help="label rules (default: labels.csv inside the capture directory, if there is one)")
    parser.add_argument("--repr", dest="representation", metavar="NAME",
                        help="image representation (default: packets, the winner of 'pcapvision compare' on the "
                             "bundled sample; see 'pcapvision image --help')")
    parser.add_argument("--target", choices=("label", "family"), help="what the traffic model predicts (default: label)")
    parser.add_argument("--arch", choices=ARCHITECTURES,
                        help="traffic model architecture (default: cnn1d; the MNIST model keeps the plain cnn)")
    parser.add_argument("--epochs", type=int, help="maximum epochs of the traffic model (default: 20)")
    parser.add_argument("--mnist-epochs", type=int, help="maximum epochs of the MNIST model (default: 5)")
    parser.add_argument("--mnist-file", metavar="PATH", help="MNIST file (default: the bundled 10,000-digit sample)")
    parser.add_argument("--no-mnist", dest="mnist", action="store_const", const=False,
                        help="skip the MNIST proof of concept")
    parser.add_argument("--suite", choices=("quick", "full", "none"), help="robustness suite (default: quick)")
    parser.add_argument("--seed", type=int, help="random seed for every stage (default: 0)")
    parser.add_argument("--executor", choices=("local", "dask"),
                        help="where ingest and imaging run (default: local; dask needs pcapvision[dask])")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="with --executor dask: a running scheduler (default: a LocalCluster of --jobs workers)")
    parser.add_argument("--jobs", type=int, metavar="N", help="ingest worker processes or LocalCluster workers (default: 1)")
    parser.add_argument("--positive-class", metavar="CLASS",
                        help="two-class traffic models: the positive (malicious) class (default: the class named "
                             "'malicious', any case; never guessed)")
    parser.add_argument("--force", action="store_true", help="redo every stage even if its output is up to date")
    parser.set_defaults(handler=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    from pcapvision.config import OPTIONS, load_config
    from pcapvision.run import format_run, run_pipeline

    options = {name: getattr(args, name, None) for name in OPTIONS}
    options["captures"] = args.captures or None  # argparse gives [] for no PATH: the configured captures stand
    record = run_pipeline(config=load_config(args.config), force=args.force, quiet=args.quiet, **options)
    print(format_run(record))
    ingest_summary = record["stages"]["ingest"]
    if ingest_summary.get("internal_errors"):
        return EXIT_INTERNAL
    return EXIT_INPUT_FAILED if ingest_summary.get("files_failed") else EXIT_OK


_SUBCOMMANDS.append(_add_run)


def _add_retrain_and_models(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from pcapvision.cli_retrain import add_models, add_retrain

    add_retrain(subparsers, common, _Formatter)
    add_models(subparsers, common, _Formatter)


_SUBCOMMANDS.append(_add_retrain_and_models)


def _add_config(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "config", parents=[common], formatter_class=_Formatter,
        help="print the pipeline configuration as a commented TOML file",
        description="'pcapvision config show' prints every parameter of 'pcapvision run' with its default, as a\n"
                    "commented TOML file to edit and pass back with --config; with --config FILE it prints that\n"
                    "file's effective configuration (defaults filled in, after validation).",
    )
    parser.add_argument("action", choices=("show",), help="what to do")
    parser.add_argument("--config", metavar="TOML", help="show this file's effective configuration")

    def run(args: argparse.Namespace) -> int:
        from pcapvision.config import load_config, render_toml

        print(render_toml(load_config(args.config)), end="")
        return EXIT_OK

    parser.set_defaults(handler=run)


_SUBCOMMANDS.append(_add_config)


def _add_compare_and_import(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from pcapvision.cli_compare import add_compare, add_image_import

    add_compare(subparsers, common, _Formatter)
    add_image_import(subparsers, common, _Formatter)


_SUBCOMMANDS.append(_add_compare_and_import)


def build_parser() -> argparse.ArgumentParser:
    """The ``pcapvision`` argument parser with every subcommand."""
    parser = _Parser(
        prog="pcapvision",
        description="Turn packet captures into images and measure how far a CNN can be trusted on them.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pcapvision {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()
    for add in _SUBCOMMANDS:
        add(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pcapvision`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["image", "import"]:  # `image import` is its own subcommand: `image` takes a FLOWS path
        argv = ["image-import", *argv[2:]]
    args = parser.parse_args(argv)
    if not args.debug:
        # TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is noise on a CLI.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    setup_logging(debug=args.debug, quiet=args.quiet)
    try:
        return int(args.handler(args))
    except ParameterError as exc:
        if args.debug:
            log.exception("usage error")
        parser.exit(EXIT_USAGE, f"pcapvision {args.command}: error: {exc}\n")
    except (PcapvisionError, OSError) as exc:
        if args.debug:
            raise
        print(f"pcapvision {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT_FAILED
    except KeyboardInterrupt:
        print(f"pcapvision {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not bad input: say so, with the traceback
        log.critical("internal error, please report it with this traceback", exc_info=True)
        print(f"pcapvision {args.command}: internal error (a bug in pcapvision; traceback above)", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK  # pragma: no cover - parser.exit does not return


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    return " ".join(text.split())
