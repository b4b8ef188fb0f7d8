"""``otel-logbert serve --config sidecar.yaml``: run the sidecar until SIGTERM (which flushes).

Exit codes: 0 after a clean shutdown; 2 with one line on stderr for a configuration problem (bad
YAML, unknown key, missing or broken bundle, port in use).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the sidecar: OTLP logs in, anomaly attributes and span events added, OTLP out",
        description="Run the sidecar (see docs/sidecar-config.md). Environment variables "
        "OTEL_LOGBERT_<SECTION>_<KEY> override the config file; options override both.",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="sidecar YAML (default: built-in defaults)")
    parser.add_argument("--bundle", metavar="DIR", help="override scoring.bundle")
    parser.add_argument("--forward", metavar="URL", help="override forward.endpoint")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.bundle:
        overrides["scoring.bundle"] = args.bundle
    if args.forward:
        overrides["forward.endpoint"] = args.forward
    return overrides


def run(args: argparse.Namespace) -> int:
    from otel_logbert.config import load_config
    from otel_logbert.otlp.telemetry import configure_logging
    from otel_logbert.sidecar.app import run_sidecar

    config = load_config(args.config, overrides=overrides_from_args(args))
    configure_logging(config.telemetry.log_format, args.log_level.upper())
    return run_sidecar(config)
