"""``otel-logbert parse-bench``: parsing accuracy (GA, PA) and speed on the Loghub-2k systems."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from otel_logbert.errors import UserError
from otel_logbert.parsing import benchmark


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parse-bench",
        help="grouping/parsing accuracy and lines/s of the log parser on Loghub-2k",
        description="Parse each Loghub-2k system's messages with its masking preset and score the keys "
        "against the corrected ground truth (GA, PA), with lines/s.",
    )
    parser.add_argument("--loghub", required=True, type=Path, help="directory of Loghub-2k systems")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the results here")
    parser.add_argument(
        "--systems", nargs="+", metavar="SYSTEM", help="systems to bench (default: all present)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.loghub.is_dir():
        raise UserError(f"--loghub {args.loghub}: not a directory")
    present = benchmark.available_systems(args.loghub)
    systems = args.systems or present
    missing = [s for s in systems if s not in present]
    if missing:
        raise UserError(f"--systems: not found under {args.loghub}: {', '.join(missing)}")
    if not systems:
        raise UserError(f"--loghub {args.loghub}: no *_structured_corrected.csv systems found")
    results = benchmark.run(args.loghub, systems)
    print(benchmark.format_table(results))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(benchmark.to_json(results), indent=2) + "\n")
    return 0
