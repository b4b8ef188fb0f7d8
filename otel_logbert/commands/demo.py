"""``otel-logbert demo [--out DIR] [--seed S] [--sessions N] [--model fastlogad]`` (``make demo``).

Simulates an OTel-instrumented shop, trains a bundle on its normal traffic, runs the real sidecar
on localhost, streams normal and faulty requests through it, prints a table of what it caught
against the injected truth and writes a report folder. Exit codes: 0 done; 2 with one line on
stderr when it could not run (a port, the sidecar, records that did not come back).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from otel_logbert.bundle import MODELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulate a traced service system, train, run the sidecar, report what it caught",
        description="End-to-end demo on localhost: simulated OTel logs with injected faults through "
        "the real sidecar; prints precision/recall against the injected truth and writes a report folder.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-report"), help="report folder (default: demo-report)")
    parser.add_argument("--seed", type=int, default=7, help="simulation and training seed (default: 7)")
    parser.add_argument("--sessions", type=int, default=1500,
                        help="traces in the live mixed stream (default: 1500)")
    parser.add_argument("--train-sessions", type=int, default=2000,
                        help="normal traces to train on (default: 2000)")
    parser.add_argument("--fault-rate", type=float, default=0.12,
                        help="share of live traces with an injected fault (default: 0.12)")
    parser.add_argument("--model", default="fastlogad", choices=MODELS,
                        help="model to train (default: fastlogad)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the model config's schedule)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otel_logbert.extras import require

    require(("train", "plot"), "demo")
    from otel_logbert.demo import DemoOptions, run_demo
    from otel_logbert.errors import UserError

    if not 0.0 <= args.fault_rate <= 1.0:
        raise UserError("--fault-rate must be between 0 and 1")
    options = DemoOptions(
        out=args.out,
        seed=args.seed,
        sessions=args.sessions,
        train_sessions=args.train_sessions,
        fault_rate=args.fault_rate,
        model=args.model,
        epochs=args.epochs,
        progress=not args.no_progress,
    )
    run_demo(options)
    return 0
