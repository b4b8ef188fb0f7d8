"""``otel-logbert`` command line: one sub-command per module in ``otel_logbert.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed ``argparse.Namespace`` and returning an exit code. ``UserError`` is
printed as one line on stderr (exit 2), never as a traceback; so is a missing optional dependency
(``otel_logbert.extras``: the message names the extra to install).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from otel_logbert import __version__
from otel_logbert.errors import UserError
from otel_logbert.extras import missing_extra

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "train",
    "eval",
    "export",
    "serve",
    "learn",
    "demo",
    "bench",
    "parse_bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-logbert",
        description="Transformer log anomaly detection for OpenTelemetry pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"otel-logbert {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"otel_logbert.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"otel_logbert.commands.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        try:
            return int(args.func(args) or 0)
        except ModuleNotFoundError as exc:
            raise (missing_extra(exc, args.command) or exc) from None
    except UserError as exc:
        print(f"otel-logbert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
