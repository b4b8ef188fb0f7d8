"""``otel-logbert learn --config sidecar.yaml --output sessions.txt``: record live sessions for training.

Runs the sidecar with ``learn.enabled`` (records still flow through, marked ``unscored`` unless
``--score``), writing each closed session as a line of log keys to ``--output`` and the parser
state beside it (``sessions.drain3.json``), the input of ``otel-logbert train``.
"""

from __future__ import annotations

import argparse

from otel_logbert.commands.serve import add_config_arguments, overrides_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="record sessions from live OTLP traffic as training data (the sidecar in learn mode)",
        description="Run the sidecar in learn mode: closed sessions go to --output, one per line.",
    )
    add_config_arguments(parser)
    parser.add_argument("--output", "-o", metavar="FILE", help="sessions file (overrides learn.output)")
    parser.add_argument(
        "--score",
        action="store_true",
        help="keep scoring with scoring.bundle while learning (default: learn only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otel_logbert.config import load_config
    from otel_logbert.otlp.telemetry import configure_logging
    from otel_logbert.sidecar.app import run_sidecar

    overrides = overrides_from_args(args) | {"learn.enabled": True, "learn.score": bool(args.score)}
    if args.output:
        overrides["learn.output"] = args.output
    config = load_config(args.config, overrides=overrides)
    configure_logging(config.telemetry.log_format, args.log_level.upper())
    return run_sidecar(config)
