"""Drift experiment: a release rewords log messages; how many normal sessions does the model flag, with
and without the semantic mapping of unseen templates, and are the anomalies still caught?

On raw HDFS logs (``../shared/datasets/hdfs_raw``, block labels beside the log):

1. Normal blocks are split at random (``--train-fraction``, seeded) into training and held-out normal.
2. A Drain3 ``LogParser`` (hdfs masking) mines the training blocks' lines only; FastLogAD is trained on
   those sessions with the packaged defaults; its threshold comes from its normal validation split.
   The semantic index (training template embeddings, ``min_cosine``, centroid baseline) is fitted on the
   same normal sessions. No anomaly label is used for any of it.
3. Held-out normal and all anomalous blocks are replayed through a copy of the trained parser as the
   sidecar does (mining: new wordings make new clusters, or generalise old ones), once with the original
   lines and once with ``REWORDINGS`` applied, and scored with keys encoded (a) by the vocabulary alone
   (unseen keys -> UNK) and (b) through ``SemanticKeyMapper``.
4. The table gives the share of held-out normal sessions flagged and of anomalous sessions caught, for the
   model and for the blog post's centroid baseline. Labels are used for this measuring only.

    .venv/bin/python benchmarks/drift_experiment.py [--log PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.raw_sessions import HDFS_SESSION_REGEX, hdfs_content, session_ids
from otel_logbert.parsing.semantic import (
    CentroidBaseline,
    MiniLMEncoder,
    SemanticKeyMapper,
    fit_bundle_index,
    session_means,
    template_text,
)
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.trainer import train_model

DEFAULT_LOG = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hdfs_raw" / "HDFS_20000.log"

# What a new release might do to HDFS messages (message part of the line only).
REWORDINGS: list[tuple[str, str]] = [
    (r"^Receiving block ", "Receiving new block "),
    (r"^(PacketResponder \d+ for block \S+) terminating$", r"\1 shutting down"),
    (r"^Received block (\S+) of size ", r"Received block \1 with size "),
    (r"^Verification succeeded for ", "Verification passed for "),
    (r" Served block ", " Sent block "),
    (r"^BLOCK\* NameSystem\.allocateBlock: ", "BLOCK* NameSystem.allocateNewBlock: "),
]
_COMPILED = [(re.compile(p), r) for p, r in REWORDINGS]


def reword(message: str) -> str:
    for pattern, replacement in _COMPILED:
        message = pattern.sub(replacement, message)
    return message


def read_labels(path: Path) -> dict[str, bool]:
    """Block id -> is anomalous (for measuring only)."""
    with path.open(newline="") as f:
        return {row["BlockId"]: row["Label"] == "Anomaly" for row in csv.DictReader(f)}


def replay(parser_state: dict, lines: list[tuple[str, list[str]]], blocks: set[str], rewrite: bool
           ) -> tuple[dict[str, list[str]], dict[str, str], int]:
    """Sessions of ``blocks`` parsed by a copy of the trained parser (mining, as the sidecar does),
    key -> template of the clusters the replay created, and how many training templates generalised
    (gained a ``<*>``: same key, so same token id)."""
    parser = LogParser.from_json(parser_state)
    trained = parser.templates()
    sessions: dict[str, list[str]] = {}
    for message, ids in lines:
        wanted = [i for i in ids if i in blocks]
        if wanted:
            key = parser.parse(reword(message) if rewrite else message).key
            for block in wanted:
                sessions.setdefault(block, []).append(key)
    now = parser.templates()
    created = {k: t for k, t in now.items() if k not in trained}
    generalised = sum(now[k] != t for k, t in trained.items())
    return sessions, created, generalised


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG)
    ap.add_argument("--train-fraction", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="FastLogAD epochs (default: the packaged config)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    labels = read_labels(args.log.with_name(args.log.name + ".block_labels.csv"))
    id_regex = re.compile(HDFS_SESSION_REGEX)
    with args.log.open(encoding="utf-8", errors="replace") as f:
        lines = [(hdfs_content(raw.rstrip("\n")), session_ids(raw, id_regex)) for raw in f]
    normal = sorted(b for b, bad in labels.items() if not bad)
    anomalous = {b for b, bad in labels.items() if bad}
    random.Random(args.seed).shuffle(normal)
    n_train = round(len(normal) * args.train_fraction)
    train_blocks, held_out = set(normal[:n_train]), set(normal[n_train:])

    parser = LogParser("hdfs")
    train: dict[str, list[str]] = {}
    for message, ids in lines:
        wanted = [i for i in ids if i in train_blocks]
        if wanted:
            key = parser.parse(message).key
            for block in wanted:
                train.setdefault(block, []).append(key)
    sessions = list(train.values())
    started = time.perf_counter()
    model, vocab, threshold, metadata = train_model("fastlogad", sessions, epochs=args.epochs, seed=args.seed,
                                                    progress=False)
    train_s = time.perf_counter() - started
    scorer = TorchScorer(model.eval(), model_name="fastlogad", model_version="drift")
    encoder = MiniLMEncoder()
    state = parser.to_json()
    index = fit_bundle_index(state, vocab, sessions, encoder, val_fraction=metadata["training"]["val_fraction"],
                             seed=args.seed, quantile=threshold["quantile"])
    assert index.baseline is not None
    baseline = CentroidBaseline.from_json(index.baseline)
    print(f"trained FastLogAD on {len(sessions)} normal sessions ({len(vocab.keys)} keys) in {train_s:.0f}s; "
          f"threshold {threshold['threshold']:.4f}; min_cosine {index.min_cosine:.4f} "
          f"({index.calibration['rule']}; nn similarity {index.calibration['nn_similarity']})", file=sys.stderr)

    rows, decisions = [], {}
    for condition, rewrite in (("original release", False), ("reworded release", True)):
        replayed, created, generalised = replay(state, lines, held_out | anomalous, rewrite)
        order = sorted(replayed)
        is_bad = np.array([b in anomalous for b in order])
        keys = [replayed[b] for b in order]
        mapper = SemanticKeyMapper(vocab, lambda: encoder, lambda _e: index)
        mapper.observe_all(created)
        assert mapper.wait(300), "semantic mapper did not finish"
        decisions[condition] = [vars(d) for d in mapper.decisions.values()]
        embedding_of = index.embedding_of()
        if created:  # the baseline embeds every template it sees, as in the blog post
            new = list(created)
            embedding_of |= dict(zip(new, encoder.encode([template_text(created[k]) for k in new]), strict=True))
        baseline_scores = baseline.score(session_means(keys, embedding_of))
        for mapping, encode in (("off", vocab.encode), ("on", mapper.encode)):
            scores = np.array([s.score for s in scorer.score([encode(k) for k in keys])])
            flagged = scores > threshold["threshold"]
            rows.append({"release": condition, "detector": "FastLogAD", "semantic_mapping": mapping,
                         "generalised": generalised, "new_clusters": len(created),
                         "mapped": len(mapper.mapped()) if mapping == "on" else 0,
                         "auroc": round(float(roc_auc_score(is_bad, scores)), 4),
                         "normal_flagged": int(flagged[~is_bad].sum()), "normal": int((~is_bad).sum()),
                         "anomalies_caught": int(flagged[is_bad].sum()), "anomalies": int(is_bad.sum())})
        flagged = baseline_scores > baseline.threshold
        rows.append({"release": condition, "detector": "centroid baseline", "semantic_mapping": "n/a",
                     "generalised": generalised, "new_clusters": len(created), "mapped": 0,
                     "auroc": round(float(roc_auc_score(is_bad, baseline_scores)), 4),
                     "normal_flagged": int(flagged[~is_bad].sum()), "normal": int((~is_bad).sum()),
                     "anomalies_caught": int(flagged[is_bad].sum()), "anomalies": int(is_bad.sum())})
        mapper.close()

    print("| release | detector | semantic mapping | templates generalised | new clusters | mapped "
          "| normal flagged | anomalies caught | AUROC |")
    print("|" + "---|" * 9)
    for r in rows:
        print(f"| {r['release']} | {r['detector']} | {r['semantic_mapping']} | {r['generalised']} "
              f"| {r['new_clusters']} | {r['mapped']} "
              f"| {r['normal_flagged'] / r['normal']:.1%} ({r['normal_flagged']}/{r['normal']}) "
              f"| {r['anomalies_caught'] / r['anomalies']:.1%} ({r['anomalies_caught']}/{r['anomalies']}) "
              f"| {r['auroc']:.3f} |")
    print("\nunseen templates of the reworded release (nearest training template, cosine, mapped):")
    for d in decisions["reworded release"]:
        nearest = index.templates[index.keys.index(d["nearest_key"])] if d["nearest_key"] else "-"
        print(f"  {d['template']!r} -> {nearest!r}  cos {d['cosine']:.3f}  {'mapped' if d['mapped'] else 'UNK'}")
    if args.json:
        args.json.write_text(json.dumps({
            "log": str(args.log), "seed": args.seed, "train_sessions": len(sessions),
            "train_seconds": round(train_s, 1),
            "threshold": threshold["threshold"], "min_cosine": index.min_cosine, "calibration": index.calibration,
            "baseline_threshold": baseline.threshold, "rewordings": REWORDINGS, "rows": rows, "decisions": decisions,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
