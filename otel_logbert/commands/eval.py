"""``otel-logbert eval``: score normal and anomalous sessions with a bundle and report honest metrics.

The threshold is the bundle's (chosen on normal validation data at training time) or, with
``--threshold dtpm``, the dynamic DTPM policy run over the sessions as one stream. The labels of the
files given here are used for measuring only.

``--baseline semantic`` measures the blog post's detector instead of the model: cosine distance of a
session's mean template embedding to the normal centroid, with the threshold and centroid stored in the
bundle's ``semantic.json`` (``train --semantic``, raw-log bundles only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from otel_logbert.bundle import METRICS_FILE, load_bundle, write_json


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
    p.add_argument("--baseline", choices=("semantic",), default=None,
                   help="semantic: the template-embedding centroid baseline instead of the model (not saved)")
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
    from otel_logbert.models.threshold import DTPMParams, DynamicThreshold

    policy = DynamicThreshold(DTPMParams.from_json(bundle.threshold["dtpm"]))
    thresholds = np.empty(len(scores))
    for i in np.random.default_rng(seed).permutation(len(scores)):
        thresholds[i], _ = policy.update(float(scores[i]))
    return thresholds


def run(args: argparse.Namespace) -> int:
    from otel_logbert.training.data import read_sessions
    from otel_logbert.training.metrics import detection_metrics, plot_distributions

    bundle = load_bundle(args.bundle, require_onnx=args.runtime == "onnx" and args.baseline is None)
    normal = read_sessions(args.normal).sessions
    abnormal = read_sessions(args.abnormal).sessions
    if args.baseline == "semantic":
        return run_semantic_baseline(args, bundle, normal, abnormal)
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
    print(format_table(metrics))
    if args.json:
        write_json(args.json, metrics)
    if not args.no_save:
        write_json(bundle.path / METRICS_FILE, metrics)
    if args.plot:
        plot_distributions(scores[: len(normal)], scores[len(normal) :], float(np.median(threshold)), str(args.plot),
                           f"{bundle.model} ({bundle.model_version}): session scores")
    return 0


def run_semantic_baseline(args: argparse.Namespace, bundle, normal: list, abnormal: list) -> int:
    """Score the sessions with the bundle's centroid baseline; print (and ``--json``) the metrics."""
    from otel_logbert.errors import UserError
    from otel_logbert.parsing.semantic import CentroidBaseline, load_index, session_means
    from otel_logbert.training.metrics import detection_metrics

    index = load_index(bundle.path)
    if index is None or index.baseline is None:
        raise UserError(f"{bundle.path}: no semantic.json with a baseline; train on raw logs with --semantic")
    baseline = CentroidBaseline.from_json(index.baseline)
    started = time.perf_counter()
    scores = baseline.score(session_means(normal + abnormal, index.embedding_of()))
    seconds = time.perf_counter() - started
    metrics = detection_metrics(scores[: len(normal)], scores[len(normal) :], baseline.threshold)
    metrics.update({
        "model": "semantic-centroid", "model_version": f"{bundle.model_version}+{index.encoder}", "runtime": "numpy",
        "threshold_policy": "static", "normal_file": str(args.normal), "abnormal_file": str(args.abnormal),
        "scoring_seconds": round(seconds, 3), "sessions_per_second": round(len(scores) / max(seconds, 1e-9), 1),
    })
    print(format_table(metrics))
    if args.json:
        write_json(args.json, metrics)
    return 0


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
