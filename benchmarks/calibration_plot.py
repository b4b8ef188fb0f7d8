"""Calibration plot: target false-alarm rate against the rate achieved on normal sessions nobody trained on.

For each bundle the pot threshold is recomputed from the normal scores it was calibrated on
(``threshold.json`` ``validation_scores``: the 3-fold out-of-fold scores of a ``calibration: pot`` bundle,
the validation split's scores of a ``quantile`` one) for a range of targets, exactly as training does
(``training.calibration.pot_threshold`` plus the runtime margin), and compared with the share of
``--normal`` sessions (e.g. HDFS ``dev_normal.csv``) scoring above it. Only normal sessions are read: no
anomaly label.

Usage: benchmarks/calibration_plot.py --normal ../shared/datasets/hdfs/dev_normal.csv --out calib.png BUNDLE...
Prints a Markdown table (bundle, target, achieved) and writes the PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from otel_logbert.bundle import load_bundle
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.training.calibration import pot_threshold
from otel_logbert.training.data import read_sessions
from otel_logbert.training.trainer import with_margin

TARGETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def thresholds(threshold: dict, targets: tuple[float, ...]) -> list[float]:
    """The pot threshold for each target from the stored out-of-fold scores, as training computes it."""
    scores, tail_q = np.array(threshold["validation_scores"]), float(threshold.get("tail_quantile", 0.98))
    out = []
    for target in targets:
        out.append(with_margin(pot_threshold(scores, target, tail_q).threshold))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--normal", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("bundles", nargs="+", type=Path)
    args = p.parse_args()
    normal = read_sessions(args.normal).sessions
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    print("| bundle | " + " | ".join(f"{t:g}" for t in TARGETS) + " |")
    print("|---" * (len(TARGETS) + 1) + "|")
    for path in args.bundles:
        bundle = load_bundle(path, require_onnx=True)
        scores = np.array([r.score for r in OnnxScorer(bundle).score([bundle.vocab.encode(s) for s in normal])])
        source = "out-of-fold" if bundle.threshold.get("calibration") == "pot" else "validation split"
        name = f"{bundle.model} seed {bundle.metadata.get('seed')} ({source})"
        achieved = [float((scores > t).mean()) for t in thresholds(bundle.threshold, TARGETS)]
        print(f"| {path} | " + " | ".join(f"{a:.4f}" for a in achieved) + " |")
        out_of_fold = source == "out-of-fold"
        ax.plot(TARGETS, np.maximum(achieved, 1e-5), marker="s" if out_of_fold else "o",
                linestyle="--" if out_of_fold else "-", linewidth=2 if out_of_fold else 1, label=name)
    ax.plot(TARGETS, TARGETS, color="black", linewidth=1, label="achieved = target")
    ax.fill_between(TARGETS, np.array(TARGETS) / 2, np.array(TARGETS) * 2, color="grey", alpha=0.2,
                    label="within 2x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target_fpr")
    ax.set_ylabel(f"achieved FPR on {args.normal.name} (1e-5 = none)")
    ax.set_title("pot calibration: target vs achieved false-alarm rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
