"""``otel-logbert bench``: sessions/s of a bundle's ONNX model with the embedded scorer (ONNX Runtime).

Scores the sessions of a file ``--runs`` times after one warm-up pass and prints the median and every
run, so the machine's noise is visible. This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from otel_logbert.bundle import load_bundle


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="scoring throughput of a bundle with ONNX Runtime (sessions/s)")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    p.add_argument("--sessions", required=True, type=Path, nargs="+", metavar="FILE",
                   help="session files (DeepLog or CSV); all their sessions are scored in each run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from otel_logbert.extras import require

    require("train", "bench")  # the session-file reader lives with the training data code (torch)
    from otel_logbert.scoring.onnx import OnnxScorer
    from otel_logbert.training.data import read_sessions

    bundle = load_bundle(args.bundle, require_onnx=True)
    sessions = [bundle.vocab.encode(s) for path in args.sessions for s in read_sessions(path).sessions]
    scorer = OnnxScorer(bundle, batch_size=args.batch_size, threads=args.threads)
    scorer.score(sessions[: args.batch_size])  # warm-up
    rates = []
    for _ in range(args.runs):
        started = time.perf_counter()
        scorer.score(sessions)
        rates.append(len(sessions) / (time.perf_counter() - started))
    result = {
        "model": bundle.model, "model_version": bundle.model_version, "sessions": len(sessions),
        "keys": sum(map(len, sessions)), "batch_size": args.batch_size, "threads": args.threads,
        "runs": [round(r, 1) for r in rates], "median_sessions_per_second": round(statistics.median(rates), 1),
    }
    print(f"{bundle.model}: {result['median_sessions_per_second']:.0f} sessions/s median of {args.runs} runs "
          f"({', '.join(f'{r:.0f}' for r in rates)}); {len(sessions)} sessions, batch {args.batch_size}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
