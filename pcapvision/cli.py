"""Command-line interface: argument parsing only; every command calls a library function.

Exit codes: 0 success; 1 some inputs failed or an input was bad (the rest was written);
2 usage error (bad option or parameter value).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pcapvision import __version__
from pcapvision.console import setup_logging
from pcapvision.errors import ParameterError, PcapvisionError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in --help and keep the description's line breaks."""


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


def build_parser() -> argparse.ArgumentParser:
    """The ``pcapvision`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
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
    return EXIT_OK  # pragma: no cover - parser.exit does not return


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    return " ".join(text.split())
