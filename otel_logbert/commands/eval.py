"""``otel-logbert eval``: score normal and anomalous sessions with a bundle and report honest metrics.

The threshold is the bundle's (chosen on normal validation data at training time) or, with
``--threshold dtpm``, the dynamic DTPM policy run over the sessions as one stream. The labels of the
files given here are used for measuring only.

Beside the model, eval measures cheap baselines on the same sessions (``--baseline``, repeatable; by
default ``new-event`` and ``counts-pca``, see ``training.baselines``; ``none`` for none), each with its
threshold from normal training data only. ``--baseline semantic`` adds the blog post's detector: cosine
distance of a session's mean template embedding to the normal centroid, with the threshold and centroid
stored in the bundle's ``semantic.json`` (``train --semantic``, raw-log bundles only). The baselines'
metrics go into the JSON under ``baselines``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from otel_logbert.bundle import METRICS_FILE, load_bundle, write_json
from otel_logbert.extras import require
from otel_logbert.training.baselines import COUNTS_PCA, NEW_EVENT

SEMANTIC = "semantic"
BASELINE_CHOICES = (NEW_EVENT, COUNTS_PCA, SEMANTIC, "none")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="measure a bundle on normal and anomalous sessions")
    p.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    p.add_argument("--normal", required=True, type=Path, metavar="FILE")
    p.add_argument("--abnormal", required=True, type=Path, metavar="FILE")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png")
    p.add_argument("--runtime", choices=("onnx", "torch"), default="onnx",
                   help="onnx: the exported model.onnx with ONNX Runtime (default); torch: the weights")
    p.add_argument("--threshold", choices=("static", "dtpm"), default="static", dest="policy")
    p.add_argument("--seed", type=int, default=0, help="stream order for --threshold dtpm")
    p.add_argument("--no-save", action="store_true", help="do not write metrics.json into the bundle")
    p.add_argument("--baseline", action="append", default=None, choices=BASELINE_CHOICES,
                   help="baselines measured beside the model (repeatable; default: new-event and counts-pca; "
                        "semantic: the template-embedding centroid, needs semantic.json; none: no baseline)")
    p.set_defaults(func=run)


def make_scorer(bundle, runtime: str):
    if runtime == "onnx":
        from otel_logbert.scoring.onnx import OnnxScorer

        return OnnxScorer(bundle)
    from otel_logbert.scoring.pytorch import TorchScorer
    from otel_logbert.training.trainer import load_model

    return TorchScorer(load_model(bundle), model_name=bundle.model, model_version=bundle.model_version)


def dynamic_thresholds(bundle, scores: np.ndarray, seed: int) -> np.ndarray:
    """DTPM over the sessions in a fixed shuffled order; returns the threshold each session met."""
    from otel_logbert.scoring.dtpm import DTPMParams, DynamicThreshold

    policy = DynamicThreshold(DTPMParams.from_json(bundle.threshold["dtpm"]))
    thresholds = np.empty(len(scores))
    for i in np.random.default_rng(seed).permutation(len(scores)):
        thresholds[i], _ = policy.update(float(scores[i]))
    return thresholds


def run(args: argparse.Namespace) -> int:
    # session readers and ranking metrics (torch, scikit-learn); the plot: matplotlib
    require(("train", "plot") if args.plot else "train", "eval --plot" if args.plot else "eval")
    from otel_logbert.training.data import read_sessions
    from otel_logbert.training.metrics import detection_metrics, plot_distributions

    bundle = load_bundle(args.bundle, require_onnx=args.runtime == "onnx")
    normal = read_sessions(args.normal).sessions
    abnormal = read_sessions(args.abnormal).sessions
    baselines = measure_baselines(args, bundle, normal, abnormal)
    scorer = make_scorer(bundle, args.runtime)
    encoded = [bundle.vocab.encode(s) for s in normal + abnormal]
    started = time.perf_counter()
    scores = np.array([r.score for r in scorer.score(encoded)])
    seconds = time.perf_counter() - started
    threshold = bundle.static_threshold if args.policy == "static" else dynamic_thresholds(bundle, scores, args.seed)
    metrics = detection_metrics(scores[: len(normal)], scores[len(normal) :], threshold)
    metrics.update({
        "model": bundle.model, "model_version": bundle.model_version, "runtime": args.runtime,
        "threshold_policy": args.policy, "normal_file": str(args.normal), "abnormal_file": str(args.abnormal),
        "scoring_seconds": round(seconds, 3), "sessions_per_second": round(len(encoded) / seconds, 1),
    })
    if baselines:  # the comparison first: the table below ends with the one-line JSON summary
        metrics["baselines"] = {m["model"]: m for m in baselines}
        print(format_comparison([metrics, *baselines]))
    print(format_table(metrics))
    if args.json:
        write_json(args.json, metrics)
    if not args.no_save:
        write_json(bundle.path / METRICS_FILE, metrics)
    if args.plot:
        plot_distributions(scores[: len(normal)], scores[len(normal) :], float(np.median(threshold)), str(args.plot),
                           f"{bundle.model} ({bundle.model_version}): session scores")
    return 0


def measure_baselines(args: argparse.Namespace, bundle, normal: list, abnormal: list) -> list[dict]:
    """Metrics of each requested baseline on the same sessions (thresholds from normal data only)."""
    from otel_logbert.errors import BundleError, UserError
    from otel_logbert.training.baselines import baseline_scores, load_baselines
    from otel_logbert.training.metrics import detection_metrics

    requested = args.baseline or [NEW_EVENT, COUNTS_PCA]
    if "none" in requested:
        return []
    stored = load_baselines(bundle.path)
    encoded = [bundle.vocab.encode(s) for s in normal + abnormal]
    rows = []
    for name in dict.fromkeys(requested):
        started = time.perf_counter()
        if name == SEMANTIC:
            scores, threshold, version = semantic_scores(bundle, normal + abnormal)
        else:
            if name == COUNTS_PCA and stored is None and args.baseline is None:
                print(f"note: {bundle.path} has no baselines.json (trained before it existed): no {COUNTS_PCA} row",
                      file=sys.stderr)
                continue
            try:
                scores, threshold = baseline_scores(name, encoded, len(bundle.vocab), stored)
            except BundleError as exc:
                raise UserError(f"--baseline {name}: {exc}") from None
            version = bundle.model_version
        seconds = time.perf_counter() - started
        metrics = detection_metrics(scores[: len(normal)], scores[len(normal) :], threshold)
        metrics.update({
            "model": "semantic-centroid" if name == SEMANTIC else name, "model_version": version,
            "runtime": "numpy", "threshold_policy": "static", "normal_file": str(args.normal),
            "abnormal_file": str(args.abnormal), "scoring_seconds": round(seconds, 3),
            "sessions_per_second": round(len(scores) / max(seconds, 1e-9), 1),
        })
        rows.append(metrics)
    return rows


def semantic_scores(bundle, sessions: list) -> tuple[np.ndarray, float, str]:
    """The bundle's centroid baseline (semantic.json): scores, threshold, version."""
    from otel_logbert.errors import UserError
    from otel_logbert.parsing.semantic import CentroidBaseline, load_index, session_means

    index = load_index(bundle.path)
    if index is None or index.baseline is None:
        raise UserError(f"{bundle.path}: no semantic.json with a baseline; train on raw logs with --semantic")
    baseline = CentroidBaseline.from_json(index.baseline)
    return (baseline.score(session_means(sessions, index.embedding_of())), baseline.threshold,
            f"{bundle.model_version}+{index.encoder}")


def format_comparison(rows: list[dict]) -> str:
    """One line per detector: the model first, then the baselines."""
    head = (f"{'detector':<20} {'threshold':>10} {'precision':>9} {'recall':>7} {'FPR':>7} {'AUROC':>7} "
            f"{'AUPR':>7} {'f1_mix':>7}")
    lines = [head] + [
        f"{m['model']:<20} {m['threshold']:>10.4g} {m['precision']:>9.4f} {m['recall']:>7.4f} {m['fpr']:>7.4f} "
        f"{m['auroc']:>7.4f} {m['aupr']:>7.4f} {m['f1_paper_mix']:>7.4f}" for m in rows
    ]
    return "\n".join(lines)


def format_table(m: dict) -> str:
    rows = [
        ("model", m["model"]), ("threshold policy", m["threshold_policy"]), ("threshold", f"{m['threshold']:.4f}"),
        ("sessions normal / anomalous", f"{m['normal_sessions']} / {m['anomalous_sessions']}"),
        ("TP FP TN FN", f"{m['tp']} {m['fp']} {m['tn']} {m['fn']}"),
        ("precision", f"{m['precision']:.4f}"), ("recall (TPR)", f"{m['recall']:.4f}"), ("F1", f"{m['f1']:.4f}"),
        ("FPR", f"{m['fpr']:.4f}"), ("AUROC", f"{m['auroc']:.4f}"), ("AUPR", f"{m['aupr']:.4f}"),
        ("F1 at paper mix (553,366:16,838)", f"{m['f1_paper_mix']:.4f}"),
        ("scoring seconds", f"{m['scoring_seconds']:.2f}"), ("sessions/s", f"{m['sessions_per_second']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n" + json.dumps(
        {k: m[k] for k in ("f1_paper_mix", "aupr", "auroc")})
