"""Small training sets: random subsets of HDFS ``train_normal.txt`` (several draws per size), each model
trained with the default calibration and measured on the dev split.

For every (size, draw, model): ``otel-logbert train`` on the subset (the one-line too-small warning is
recorded), ``otel-logbert eval`` on dev_normal.csv + dev_abnormal.csv (labels for measuring only). Prints
one Markdown row per run, then per model and size the AUROC minimum and median.

Usage: benchmarks/small_sets.py [--sizes 20 50] [--draws 3] [--models fastlogad logbert loganom] [--out runs/small]
       [--train-arg=--calibration=quantile ...]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "hdfs"


def run_one(data: Path, out: Path, model: str, size: int, draw: int, train_args: list[str]) -> dict:
    run = out / f"{model}-{size}-{draw}"
    run.mkdir(parents=True, exist_ok=True)
    lines = (data / "train_normal.txt").read_text().splitlines(True)
    subset = random.Random(1000 * size + draw).sample(lines, size)
    (run / "train.txt").write_text("".join(subset))
    cli = [sys.executable, "-m", "otel_logbert.cli"]
    started = time.perf_counter()
    train = subprocess.run([*cli, "train", "--model", model, "--train", str(run / "train.txt"), "--out",
                            str(run / "bundle"), "--seed", str(draw), "--quiet", *train_args], capture_output=True,
                           text=True, check=True)
    seconds = time.perf_counter() - started
    subprocess.run([*cli, "eval", "--bundle", str(run / "bundle"), "--normal", str(data / "dev_normal.csv"),
                    "--abnormal", str(data / "dev_abnormal.csv"), "--baseline", "none", "--no-save", "--json",
                    str(run / "eval.json")], capture_output=True, text=True, check=True)
    metrics = json.loads((run / "eval.json").read_text())
    threshold = json.loads((run / "bundle" / "threshold.json").read_text())
    steps = json.loads((run / "bundle" / "metadata.json").read_text())["steps"]
    rule = threshold.get("tail", {}).get("rule", f"{threshold['calibration']} {threshold['quantile']:g}")
    return {"model": model, "size": size, "draw": draw, "seconds": round(seconds, 1), "steps": steps,
            "warned": "too few to calibrate" in train.stderr, "rule": rule,
            **{k: metrics[k] for k in ("auroc", "aupr", "recall", "fpr", "f1_paper_mix", "threshold")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["fastlogad", "logbert", "loganom"])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "small")
    p.add_argument("--train-arg", action="append", default=[], help="extra `train` argument (repeatable), "
                   "e.g. --train-arg=--calibration=quantile")
    args = p.parse_args()
    rows = []
    print("| model | sessions | draw | AUROC | AUPR | recall | FPR | f1_paper_mix | threshold rule | warned "
          "| steps | train s |", flush=True)
    print("|---" * 12 + "|", flush=True)
    for size in args.sizes:
        for draw in range(args.draws):
            for model in args.models:
                r = run_one(args.data, args.out, model, size, draw, args.train_arg)
                rows.append(r)
                print(f"| {model} | {size} | {draw} | {r['auroc']:.4f} | {r['aupr']:.4f} | {r['recall']:.4f} "
                      f"| {r['fpr']:.4f} | {r['f1_paper_mix']:.4f} | {r['rule']} | {r['warned']} | {r['steps']} "
                      f"| {r['seconds']} |", flush=True)
    print("\n| model | sessions | draws | AUROC min | AUROC median | recall median | FPR median |")
    print("|---" * 7 + "|")
    for model in args.models:
        for size in args.sizes:
            group = [r for r in rows if r["model"] == model and r["size"] == size]
            auroc = [r["auroc"] for r in group]
            print(f"| {model} | {size} | {len(group)} | {min(auroc):.4f} | {statistics.median(auroc):.4f} "
                  f"| {statistics.median(r['recall'] for r in group):.4f} "
                  f"| {statistics.median(r['fpr'] for r in group):.4f} |")


if __name__ == "__main__":
    main()
