"""``otel-logbert bench``: sessions/s of a bundle's ONNX model with the embedded scorer (ONNX Runtime).

Scores the sessions of a file ``--runs`` times after one warm-up pass and prints the median and every
run, so the machine's noise is visible; then the same with the verdict cache (``scoring.cache``), each
run starting from an empty cache, so its hit rate is the repetition within the file. This is a
benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from otel_logbert.bundle import load_bundle
from otel_logbert.scoring.base import Scorer
from otel_logbert.scoring.cache import DEFAULT_CACHE_KEYS, CachedScorer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="scoring throughput of a bundle with ONNX Runtime (sessions/s)")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    p.add_argument("--sessions", required=True, type=Path, nargs="+", metavar="FILE",
                   help="session files (DeepLog or CSV); all their sessions are scored in each run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--cache-entries", type=int, default=100_000,
                   help="verdict cache size for the cached runs (0: no cached runs)")
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
    rates = _runs(lambda: scorer, sessions, args.runs)
    result = {
        "model": bundle.model, "model_version": bundle.model_version, "sessions": len(sessions),
        "keys": sum(map(len, sessions)), "batch_size": args.batch_size, "threads": args.threads,
        "runs": [round(r, 1) for r in rates], "median_sessions_per_second": round(statistics.median(rates), 1),
    }
    print(f"{bundle.model}: {result['median_sessions_per_second']:.0f} sessions/s median of {args.runs} runs "
          f"({', '.join(f'{r:.0f}' for r in rates)}); {len(sessions)} sessions, batch {args.batch_size}")
    if args.cache_entries > 0:
        caches: list[CachedScorer] = []

        def fresh() -> CachedScorer:
            caches.append(CachedScorer(scorer, max_entries=args.cache_entries, max_keys=DEFAULT_CACHE_KEYS))
            return caches[-1]

        cached = _runs(fresh, sessions, args.runs)
        hit_rate = caches[-1].stats.hit_rate
        result["cache"] = {
            "entries": args.cache_entries, "hit_rate": round(hit_rate, 4), "runs": [round(r, 1) for r in cached],
            "median_sessions_per_second": round(statistics.median(cached), 1),
        }
        print(f"{bundle.model} with the verdict cache: {statistics.median(cached):.0f} sessions/s median "
              f"({', '.join(f'{r:.0f}' for r in cached)}); hit rate {hit_rate:.1%} (empty cache each run)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _runs(make_scorer: Callable[[], Scorer], sessions: list[list[int]], runs: int) -> list[float]:
    """Sessions/s of ``runs`` passes over ``sessions``, each with ``make_scorer()``."""
    rates = []
    for _ in range(runs):
        scorer = make_scorer()
        started = time.perf_counter()
        scorer.score(sessions)
        rates.append(len(sessions) / (time.perf_counter() - started))
    return rates
