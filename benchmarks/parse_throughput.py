"""Serve-time parsing throughput: ``LogParser`` vs drain3's ``TemplateMiner.add_log_message``.

Both parse the messages of ``HDFS_20000.log`` (headers stripped) with the same masking preset and
Drain parameters, side by side in one run. Each side is first trained on the whole file, then timed
over it again, as in serving a steady stream of known templates:

- ``drain3 add_log_message``: the stock miner, mining every line (what a plain Drain3 sidecar does);
- ``LogParser.parse``: mining path, with the masked-shape cache in front;
- ``LogParser.match``: lookup only (no mining).

Prints the median lines/s of 3 runs for each, and the speed-ups. Usage (with the package installed,
as ``make`` does, or with ``PYTHONPATH=.``):

    python benchmarks/parse_throughput.py [--log ../shared/datasets/hdfs_raw/HDFS_20000.log] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from otel_logbert.parsing.drain import LogParser, plain_miner
from otel_logbert.parsing.raw_sessions import hdfs_content

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LOG = REPO.parent / "shared" / "datasets" / "hdfs_raw" / "HDFS_20000.log"


def lines_per_s(fn: Callable[[str], object], messages: list[str]) -> float:
    start = time.perf_counter()
    for message in messages:
        fn(message)
    return len(messages) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args_parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    args_parser.add_argument("--runs", type=int, default=3)
    args_parser.add_argument("--preset", default="hdfs")
    args = args_parser.parse_args(argv)
    logging.disable(logging.INFO)  # drain3 logs every miner it starts

    with open(args.log, encoding="utf-8", errors="replace") as f:
        messages = [hdfs_content(line.rstrip("\n")) for line in f]
    miner = plain_miner(args.preset)
    parser = LogParser(args.preset)
    for message in messages:  # train both on the same data
        miner.add_log_message(message)
        parser.parse(message)
    agree = sum(str(miner.match(m).cluster_id) == parser.parse(m).key for m in messages[:2000])

    sides = {
        "drain3 add_log_message": miner.add_log_message,
        "LogParser.parse": parser.parse,
        "LogParser.match": parser.match,
    }
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.runs):  # interleaved, so both sides see the same machine load
        for name, fn in sides.items():
            results[name].append(lines_per_s(fn, messages))

    base = statistics.median(results["drain3 add_log_message"])
    print(f"{len(messages)} HDFS messages, preset {args.preset!r}, median of {args.runs} runs")
    print(f"{'path':<26} {'lines/s':>10} {'speed-up':>9}")
    for name, runs in results.items():
        median = statistics.median(runs)
        print(f"{name:<26} {median:>10,.0f} {median / base:>8.2f}x")
    print(f"same cluster as drain3 on {agree}/2000 sampled messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
