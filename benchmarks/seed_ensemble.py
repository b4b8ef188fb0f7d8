"""A seed ensemble against one model: do K models trained on the same split vary less than one?

For every seed the product's split (``split_normal``) holds out the validation sessions; K members are
trained on the same train split with member seeds ``seed + MEMBER_SEED_STRIDE * i`` (member 0 is the
single model ``train --seed`` serves today). Each member sets its own detection parameters on the
validation split and scores it and the dev split. The ensemble score of a session is the mean over
members of ``(score - median) / (q95 - median)``, both taken over that member's validation scores
(``training.ensemble``); the threshold is the model's usual rule (its config's quantile) over the
ensemble's validation scores. Labels (dev) only measure.

Usage: benchmarks/seed_ensemble.py --model fastlogad --seeds 0 1 2 3 4 [--members 3] [--out runs/ensemble]

Writes ``<out>/<model>-<seed>-k<members>.npz`` (per member ``val{i}``, ``devn{i}``, ``deva{i}``; an existing file is
reused, so an interrupted run goes on where it stopped) and prints per seed single vs ensemble.
Training is single-threaded (``OTEL_LOGBERT_TORCH_THREADS``, default 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets" / "hdfs"


def member_scores(model_name: str, seed: int, members: int) -> dict[str, np.ndarray]:
    """Per member ``i``: ``val{i}`` (validation scores), ``devn{i}``, ``deva{i}`` (dev scores)."""
    import torch

    from otel_logbert.parsing.vocabulary import Vocabulary
    from otel_logbert.training import trainer
    from otel_logbert.training.config import load_training_config
    from otel_logbert.training.data import read_sessions, split_normal
    from otel_logbert.training.ensemble import member_seed

    torch.set_num_threads(int(os.environ.get(trainer.THREADS_ENV, trainer.DEFAULT_THREADS)))
    sessions = read_sessions(DATA / "train_normal.txt").sessions
    dev_normal = read_sessions(DATA / "dev_normal.csv").sessions
    dev_abnormal = read_sessions(DATA / "dev_abnormal.csv").sessions
    model_values, training = load_training_config(model_name)
    vocab = Vocabulary.from_sessions(sessions)
    train, val = split_normal(sessions, training["val_fraction"], seed)
    out: dict[str, np.ndarray] = {}
    for i in range(members):
        started = time.perf_counter()
        fit = trainer._fit(model_name, model_values, training, train, vocab, seed=member_seed(seed, i), device="cpu",
                           explicit_epochs=False, progress=sys.stderr.isatty(),
                           desc=f"{model_name} seed {seed} member {i + 1}/{members}")
        trainer._calibrate(fit.model, val, vocab)
        for name, part in (("val", val), ("devn", dev_normal), ("deva", dev_abnormal)):
            out[f"{name}{i}"] = trainer._scores(fit.model, model_name, vocab, part)
        print(f"{model_name} seed {seed} member {i}: {time.perf_counter() - started:.0f} s", file=sys.stderr,
              flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastlogad")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble"))
    parser.add_argument("--train-only", action="store_true", help="train and save the scores, print nothing")
    args = parser.parse_args()
    from otel_logbert.training.config import load_training_config
    from otel_logbert.training.ensemble import combine, member_units
    from otel_logbert.training.metrics import detection_metrics

    args.out.mkdir(parents=True, exist_ok=True)
    quantile = float(load_training_config(args.model)[1]["threshold_quantile"])
    rows: dict[str, list[dict]] = {"single": [], "ensemble": []}
    for seed in args.seeds:
        path = args.out / f"{args.model}-{seed}-k{args.members}.npz"
        if not path.exists():
            np.savez(path, **member_scores(args.model, seed, args.members))
        if args.train_only:
            continue
        s = np.load(path)
        k = args.members
        rows["single"].append(detection_metrics(s["devn0"], s["deva0"], float(np.quantile(s["val0"], quantile))))
        units = member_units([s[f"val{i}"] for i in range(k)])
        val, devn, deva = (combine([s[f"{part}{i}"] for i in range(k)], units) for part in ("val", "devn", "deva"))
        rows["ensemble"].append(detection_metrics(devn, deva, float(np.quantile(val, quantile))))
    if args.train_only:
        return 0
    print(f"{args.model}, seeds {' '.join(map(str, args.seeds))}, {args.members} members, quantile {quantile}")
    print("| served | f1_paper_mix per seed | min / median | AUROC min | AUPR min | dev FPR per seed |")
    print("|---" * 6 + "|")
    for name, runs in rows.items():
        f1 = [m["f1_paper_mix"] for m in runs]
        per_seed = " / ".join(f"{x:.3f}" for x in f1)
        fpr = " / ".join(f"{m['fpr']:.4f}" for m in runs)
        print(f"| {name} | {per_seed} | {min(f1):.3f} / {statistics.median(f1):.3f} "
              f"| {min(m['auroc'] for m in runs):.4f} | {min(m['aupr'] for m in runs):.4f} | {fpr} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
