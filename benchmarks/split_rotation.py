"""How much a threshold rule depends on which sessions the validation split holds: the split rotated.

For every seed the normal training file is cut into 1 / val_fraction folds (``fold_indices``, 5 at the
default 0.2). One model per fold is trained on the other folds, exactly as the served model of the
``quantile`` rule is trained on its train split, and scores its own held-out fold and the dev split. Each
fold model then stands in for a served model: every label-free rule below sets its threshold from normal
scores only, and dev (labels for measuring only) says how that threshold does. Five rotations per seed
give five times the splits that five seeds give, at the training cost of five models.

Rules, all at ``target_fpr`` 0.002 where they take one:

- ``max``, ``q0.999``, ``q0.998``: that quantile of the model's own validation fold (``max`` is
  FastLogAD's default, ``q0.999`` LogBERT's);
- ``pot_val``: the peaks-over-threshold tail of its own validation fold;
- ``pooled``: every fold model's held-out scores made unit-free, ``(s - median) / (q95 - median)`` of
  its own held-out scores, pooled over the folds (every training session once), their
  peaks-over-threshold tail at the target mapped back into this model's units. It counts the rare
  normal orderings of all sessions instead of one fold's.

Usage: benchmarks/split_rotation.py --model fastlogad --seeds 0 1 2 3 4 [--out runs/rotation]

Writes ``<out>/<model>-<seed>.npz`` (scores; an existing file is reused, so an interrupted run goes on
where it stopped) and prints per rule the min / median f1_paper_mix and the dev FPR over all rotations.
Training is single-threaded (``OTEL_LOGBERT_TORCH_THREADS``, default 1): two seeds can run side by side
on two cores.
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
TARGET_FPR = 0.002
REFERENCE_QUANTILE = 0.95


def fold_scores(model_name: str, seed: int) -> dict[str, np.ndarray]:
    """Per fold ``f``: ``held{f}`` (its held-out fold's scores), ``devn{f}``, ``deva{f}`` (dev scores)."""
    import torch

    from otel_logbert.parsing.vocabulary import Vocabulary
    from otel_logbert.training import trainer
    from otel_logbert.training.calibration import fold_indices
    from otel_logbert.training.config import load_training_config
    from otel_logbert.training.data import read_sessions

    torch.set_num_threads(int(os.environ.get(trainer.THREADS_ENV, trainer.DEFAULT_THREADS)))
    sessions = read_sessions(DATA / "train_normal.txt").sessions
    dev_normal = read_sessions(DATA / "dev_normal.csv").sessions
    dev_abnormal = read_sessions(DATA / "dev_abnormal.csv").sessions
    model_values, training = load_training_config(model_name)
    trainer._set_epochs(model_name, model_values, training, None)
    vocab = Vocabulary.from_sessions(sessions)
    folds = fold_indices(len(sessions), round(1 / training["val_fraction"]), seed)
    out: dict[str, np.ndarray] = {}
    for f, held in enumerate(folds):
        held_set = set(held)
        inside = [s for j, s in enumerate(sessions) if j not in held_set]
        outside = [sessions[j] for j in held]
        started = time.perf_counter()
        fit = trainer._fit(model_name, model_values, training, inside, vocab, seed=seed, device="cpu",
                           explicit_epochs=False, progress=sys.stderr.isatty(),
                           desc=f"{model_name} seed {seed} fold {f + 1}/{len(folds)}")
        trainer._calibrate(fit.model, outside, vocab)  # LogBERT's top-g and radius from its own held-out fold
        for name, part in (("held", outside), ("devn", dev_normal), ("deva", dev_abnormal)):
            out[f"{name}{f}"] = trainer._scores(fit.model, model_name, vocab, part)
        print(f"{model_name} seed {seed} fold {f}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def thresholds(held_out: list[np.ndarray], served: int) -> dict[str, float]:
    """Every rule's threshold for fold model ``served`` (module docstring)."""
    from otel_logbert.training.calibration import pot_threshold

    own = held_out[served]
    units = [np.quantile(h, [0.5, REFERENCE_QUANTILE]) for h in held_out]
    pooled = np.concatenate([(h - m) / (q - m) for h, (m, q) in zip(held_out, units, strict=True)])
    median, reference = units[served]
    return {
        "max": float(own.max()),
        "q0.999": float(np.quantile(own, 0.999)),
        "q0.998": float(np.quantile(own, 1 - TARGET_FPR)),
        "pot_val": pot_threshold(own, TARGET_FPR).threshold,
        "pooled": median + pot_threshold(pooled, TARGET_FPR).threshold * (reference - median),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastlogad")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=Path("runs/rotation"))
    args = parser.parse_args()
    from otel_logbert.training.metrics import detection_metrics

    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[tuple[int, int, dict]]] = {}
    for seed in args.seeds:
        path = args.out / f"{args.model}-{seed}.npz"
        if not path.exists():
            np.savez(path, **fold_scores(args.model, seed))
        scores = np.load(path)
        k = sum(name.startswith("held") for name in scores.files)
        held_out = [scores[f"held{f}"] for f in range(k)]
        for served in range(k):
            for rule, value in thresholds(held_out, served).items():
                m = detection_metrics(scores[f"devn{served}"], scores[f"deva{served}"], value)
                rows.setdefault(rule, []).append((seed, served, m))
    print(f"{args.model}, seeds {' '.join(map(str, args.seeds))}, every fold model as the served model")
    print("| rule | rotations | f1_paper_mix min / median | recall min | dev FPR median | FPR within 2x of 0.002 |")
    print("|---" * 6 + "|")
    for rule, runs in rows.items():
        f1 = [m["f1_paper_mix"] for _, _, m in runs]
        fpr = [m["fpr"] for _, _, m in runs]
        within = sum(TARGET_FPR / 2 <= x <= 2 * TARGET_FPR for x in fpr)
        recall = min(m["recall"] for _, _, m in runs)
        print(f"| {rule} | {len(runs)} | {min(f1):.3f} / {statistics.median(f1):.3f} | {recall:.3f} "
              f"| {statistics.median(fpr):.4f} | {within} of {len(runs)} |")
    print()
    print("| rule | " + " | ".join(f"{s}.{f}" for s, f, _ in rows["max"]) + " |")
    print("|---" * (1 + len(rows["max"])) + "|")
    for rule, runs in rows.items():
        print(f"| {rule} | " + " | ".join(f"{m['f1_paper_mix']:.3f}" for _, _, m in runs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
