"""Scoring throughput and latency: Triton (python backend, CPU) vs the embedded ONNX Runtime scorer.

Three ways to score the same real HDFS dev sessions (normal + abnormal, encoded with the bundle's
vocabulary), each driven by ``--concurrency`` client threads sending requests of ``B`` sessions:

- ``embedded``: ``OnnxScorer`` in-process (one ONNX Runtime session, 1 intra-op thread);
- ``triton+batching``: ``TritonScorer`` -> tritonserver, model with dynamic batching
  (max_queue_delay ``--delay-us``, preferred sizes 8..256);
- ``triton-batching``: the same model without dynamic batching.

Both Triton models are the python backend (``model.py`` running the same ``model.onnx`` with ONNX
Runtime, 1 instance, 1 intra-op thread), served by one tritonserver on loopback. For each mode and
batch size: sessions/s over the run and p50/p99 of the per-request latency; each number is the median
of ``--runs`` rounds, each round running the three modes back to back (so that load from elsewhere
on the machine hits all of them alike). Triton's statistics give the rows per model execution: above
the request size B only when the dynamic batcher merged requests.

Usage (with the venv ``make`` builds and ``scripts/setup-triton.sh``):

    python benchmarks/triton_bench.py [--bundle DIR] [--runs 3] [--concurrency 4] [--out FILE.json]

Without ``--bundle`` it trains FastLogAD for 2 epochs on 400 normal HDFS sessions (about 15 s);
the model's size, not its quality, is what matters here.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from otel_logbert.bundle import Bundle, load_bundle
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.scoring.triton import TritonScorer
from otel_logbert.triton.repository import default_model_name, write_triton_repository
from otel_logbert.triton.server import TritonServer

REPO = Path(__file__).resolve().parents[1]
HDFS = REPO.parent / "shared" / "datasets" / "hdfs"
BATCH_SIZES = (1, 8, 32, 128, 256)
SESSIONS_PER_RUN = 2048  # at least; a run is max(SESSIONS_PER_RUN / B, MIN_REQUESTS) requests
MIN_REQUESTS = 16


def train_bundle(out: Path) -> Path:
    from otel_logbert.export import export_onnx
    from otel_logbert.training.data import read_sessions
    from otel_logbert.training.trainer import save_trained, train_model

    sessions = read_sessions(HDFS / "train_normal.txt").sessions[:400]
    model, vocab, threshold, metadata = train_model("fastlogad", sessions, epochs=2, progress=False)
    save_trained(out, "fastlogad", model, vocab, threshold, metadata)
    export_onnx(out)
    return out


def dev_sessions(bundle: Bundle) -> list[list[int]]:
    from otel_logbert.training.data import read_sessions

    sessions = read_sessions(HDFS / "dev_normal.csv").sessions + read_sessions(HDFS / "dev_abnormal.csv").sessions
    return [bundle.vocab.encode(s) for s in sessions]


def run_once(
    score: Callable[[list[list[int]]], object], pool: Sequence[list[int]], batch: int, concurrency: int, seed: int
) -> tuple[float, list[float]]:
    """Send requests of ``batch`` sessions from ``concurrency`` threads; (sessions/s, latencies s)."""
    rng = np.random.default_rng(seed)
    n_requests = max(MIN_REQUESTS, SESSIONS_PER_RUN // batch)
    requests = [[pool[i] for i in rng.integers(0, len(pool), batch)] for _ in range(n_requests)]
    latencies: list[float] = []
    lock = threading.Lock()

    def one(sessions: list[list[int]]) -> None:
        started = time.perf_counter()
        score(sessions)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as executor:
        list(executor.map(one, requests))
    total = time.perf_counter() - started
    return n_requests * batch / total, latencies


def measure(
    modes: dict[str, Callable[[list[list[int]]], object]],
    stats: dict[str, Callable[[], tuple[int, int]]],
    pool: Sequence[list[int]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """For each batch size, ``--runs`` rounds; each round runs every mode once, one after the other,
    so that load from elsewhere on the machine hits all modes alike. Medians over the rounds."""
    for score in modes.values():
        score(list(pool[:8]))  # warm
    rows = []
    for batch in args.batch_sizes:
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in modes}
        executed: dict[str, list[float]] = {name: [] for name in stats}
        for run in range(args.runs):
            for name, score in modes.items():
                before = stats[name]() if name in stats else None
                rate, latencies = run_once(score, pool, batch, args.concurrency, seed=run)
                if before is not None:
                    inferences, executions = (a - b for a, b in zip(stats[name](), before, strict=True))
                    executed[name].append(inferences / max(executions, 1))
                ms = np.array(latencies) * 1000
                samples[name].append((rate, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
        for name, values in samples.items():
            row = {
                "mode": name, "batch": batch, "runs": args.runs, "concurrency": args.concurrency,
                "sessions_per_s": statistics.median(v[0] for v in values),
                "p50_ms": statistics.median(v[1] for v in values),
                "p99_ms": statistics.median(v[2] for v in values),
                "rows_per_execution": statistics.median(executed[name]) if executed.get(name) else None,
            }
            print(f"  {name:16s} B={batch:<4d} {row['sessions_per_s']:9.0f} sessions/s  p50 {row['p50_ms']:8.2f} ms"
                  f"  p99 {row['p99_ms']:8.2f} ms", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def triton_counts(url: str, model: str) -> Callable[[], tuple[int, int]]:
    """(inference_count, execution_count) of ``model`` so far, from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle with model.onnx (default: train a small one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_microseconds (batching model)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(BATCH_SIZES))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="triton-bench-") as tmp:
        work = Path(tmp)
        bundle_dir = args.bundle or train_bundle(work / "bundle")
        bundle = load_bundle(bundle_dir, require_onnx=True)
        pool = dev_sessions(bundle)
        base = default_model_name(bundle)
        repo = work / "repo"
        write_triton_repository(bundle_dir, repo, "python", model_name=f"{base}-batching",
                                max_queue_delay_us=args.delay_us, preferred_batch_sizes=(8, 32, 128, 256))
        write_triton_repository(bundle_dir, repo, "python", model_name=f"{base}-nobatching", dynamic_batching=False)
        print(f"bundle {bundle.model_version} (max_len {bundle.max_len}), {len(pool)} HDFS dev sessions, "
              f"concurrency {args.concurrency}, {args.runs} runs", file=sys.stderr)

        embedded = OnnxScorer(bundle, threads=1)
        with TritonServer(repo, work / "server") as server:
            batching = TritonScorer(bundle, url=server.grpc_url, triton_model_name=f"{base}-batching",
                                    timeout_s=30, deadline_s=60)
            plain = TritonScorer(bundle, url=server.grpc_url, triton_model_name=f"{base}-nobatching",
                                 timeout_s=30, deadline_s=60)
            modes = {"embedded": embedded.score, "triton+batching": batching.score, "triton-batching": plain.score}
            stats = {"triton+batching": triton_counts(server.grpc_url, f"{base}-batching"),
                     "triton-batching": triton_counts(server.grpc_url, f"{base}-nobatching")}
            results = measure(modes, stats, pool, args)
            batching.close()
            plain.close()

    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | batch | sessions/s | p50 ms | p99 ms | rows/execution |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        executed = f"{r['rows_per_execution']:.1f}" if r["rows_per_execution"] is not None else "-"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['sessions_per_s']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {executed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
