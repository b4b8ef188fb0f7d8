"""Choosing BERT-LogAnom's session score on normal data only, then measuring every variant on dev.

The per-key MLKP losses (every key predicted once, ``k`` interleaved mask patterns) and the VHM distance
of a trained bundle are computed once per chunk; each variant (``mean`` = the paper's, ``max``, ``topk``
with several k, and several score-time lambdas) turns them into a session score (max over chunks, as
the scorers do). The choice uses no anomaly label:

1. Threshold of each variant = the bundle's quantile (99.9%) of its scores on the normal validation split
   (the split the trainer held out: same seed, same fraction).
2. Synthetic faults made from those normal validation sessions: one key replaced by another key of the
   vocabulary drawn at random, one random key inserted, one key replaced by a never-seen key (UNK).
   Criterion: the mean share of synthetic faults above the threshold. Such faults are not the HDFS
   anomalies; they stand for "one bad key somewhere in a normal session", the case the mean dilutes.
3. Only then the dev files (with labels) are scored, for measuring.

    .venv/bin/python benchmarks/loganom_score_choice.py --bundle runs/hdfs14/loganom/bundle [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from otel_logbert.bundle import load_bundle
from otel_logbert.models.loganom import mlkp_term
from otel_logbert.parsing.vocabulary import FIRST_KEY_ID, UNK_ID
from otel_logbert.scoring.batching import chunk, pad_batch
from otel_logbert.training.data import read_sessions, split_normal
from otel_logbert.training.metrics import detection_metrics
from otel_logbert.training.trainer import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hdfs"
VARIANTS = [("mean", 1), ("max", 1), ("topk", 2), ("topk", 3), ("topk", 5), ("topk", 10)]
LAMBDAS = (0.0, 0.1, 0.2, 0.5)


class KeyLosses:
    """Per-chunk per-key losses and distances of a bundle's model; session scores for any variant."""

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle = load_bundle(bundle_dir)
        self.model = load_model(self.bundle)
        torch.set_num_threads(1)

    @torch.no_grad()
    def compute(self, sessions: list[list[int]]) -> tuple[list[np.ndarray], list[float], list[int]]:
        chunks, owner = [], []
        for i, s in enumerate(sessions):
            for c in chunk(s, self.bundle.max_len):
                chunks.append(c)
                owner.append(i)
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
        ce_rows: list[np.ndarray] = [np.zeros(0)] * len(chunks)
        dist = [0.0] * len(chunks)
        for start in range(0, len(order), 256):
            ids = order[start : start + 256]
            tokens = torch.from_numpy(pad_batch([chunks[i] for i in ids], self.bundle.max_len))
            ce, _, distance = self.model.key_losses(tokens)
            for row, i in enumerate(ids):
                ce_rows[i] = ce[row, : len(chunks[i])].numpy()
                dist[i] = float(distance[row])
        return ce_rows, dist, owner

    @staticmethod
    def scores(losses: tuple[list[np.ndarray], list[float], list[int]], n: int, score: str, k: int,
               lam: float) -> np.ndarray:
        ce_rows, dist, owner = losses
        out = np.full(n, -np.inf)
        width = max(len(r) for r in ce_rows)
        ce = np.zeros((len(ce_rows), width), dtype=np.float32)
        for i, r in enumerate(ce_rows):
            ce[i, : len(r)] = r
        real = torch.from_numpy(np.arange(width)[None, :] < np.array([len(r) for r in ce_rows])[:, None])
        term = mlkp_term(torch.from_numpy(ce), real, score, k).numpy() + lam * np.asarray(dist)
        np.maximum.at(out, np.asarray(owner), term)
        return out


def synthetic_faults(sessions: list[list[int]], vocab_size: int, seed: int) -> dict[str, list[list[int]]]:
    """One bad key in each normal session: replaced, inserted, or replaced by a never-seen key."""
    rng = random.Random(seed)
    keys = list(range(FIRST_KEY_ID, vocab_size))
    out: dict[str, list[list[int]]] = {"replace": [], "insert": [], "unseen": []}
    for s in sessions:
        at = rng.randrange(len(s))
        out["replace"].append(s[:at] + [rng.choice([k for k in keys if k != s[at]] or keys)] + s[at + 1 :])
        out["insert"].append(s[:at] + [rng.choice(keys)] + s[at:])
        out["unseen"].append(s[:at] + [UNK_ID] + s[at + 1 :])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--normal", type=Path, default=DATA / "dev_normal.csv")
    ap.add_argument("--abnormal", type=Path, default=DATA / "dev_abnormal.csv")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    kl = KeyLosses(args.bundle)
    bundle = kl.bundle
    meta = bundle.metadata
    train = read_sessions(meta["train_file"]).sessions
    _, val = split_normal(train, meta["training"]["val_fraction"], meta["seed"])
    quantile = float(bundle.threshold["quantile"])
    val_enc = [bundle.vocab.encode(s) for s in val]
    faults = synthetic_faults(val_enc, len(bundle.vocab), seed=meta["seed"])
    val_losses = kl.compute(val_enc)
    fault_losses = {name: kl.compute(s) for name, s in faults.items()}
    normal = read_sessions(args.normal).sessions
    abnormal = read_sessions(args.abnormal).sessions
    dev_enc = [bundle.vocab.encode(s) for s in normal + abnormal]
    dev_losses = kl.compute(dev_enc)

    rows = []
    for score, k in VARIANTS:
        for lam in LAMBDAS:
            val_scores = kl.scores(val_losses, len(val_enc), score, k, lam)
            value = float(np.quantile(val_scores, quantile))
            threshold = value + 1e-4 * max(1.0, abs(value))
            caught = {name: float((kl.scores(fl, len(val_enc), score, k, lam) > threshold).mean())
                      for name, fl in fault_losses.items()}
            dev = kl.scores(dev_losses, len(dev_enc), score, k, lam)
            m = detection_metrics(dev[: len(normal)], dev[len(normal) :], threshold)
            rows.append({"score": score, "top_k": k if score == "topk" else None, "lam": lam,
                         "threshold": threshold, "synthetic": caught,
                         "synthetic_mean": float(np.mean(list(caught.values()))),
                         **{key: m[key] for key in ("precision", "recall", "fpr", "auroc", "aupr", "f1_paper_mix")}})
    best = max(rows, key=lambda r: (round(r["synthetic_mean"], 3), -(r["top_k"] or 0)))
    print(f"bundle {args.bundle} (trained lam {bundle.config.get('lam')}); threshold: {quantile} quantile of "
          f"{len(val_enc)} normal validation sessions; synthetic faults from the same sessions")
    print(f"{'score':<8}{'lam':>5}  {'replace':>7} {'insert':>7} {'unseen':>7} {'synth':>6} | "
          f"{'prec':>6} {'recall':>6} {'FPR':>6} {'AUROC':>6} {'f1_mix':>6}")
    for r in rows:
        name = f"top{r['top_k']}" if r["top_k"] else r["score"]
        mark = "  <- chosen (synthetic faults, no labels)" if r is best else ""
        s = r["synthetic"]
        print(f"{name:<8}{r['lam']:>5}  {s['replace']:>7.3f} {s['insert']:>7.3f} {s['unseen']:>7.3f} "
              f"{r['synthetic_mean']:>6.3f} | {r['precision']:>6.4f} {r['recall']:>6.4f} {r['fpr']:>6.4f} "
              f"{r['auroc']:>6.4f} {r['f1_paper_mix']:>6.3f}{mark}")
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "rows": rows, "chosen": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
