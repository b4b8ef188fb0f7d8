"""Detection metrics for ``eval``: threshold metrics, ranking metrics and F1 at the HDFS paper mix."""

from __future__ import annotations

from typing import Any

import numpy as np

# The HDFS test mix of the papers (LogBERT, FastLogAD): normal and anomalous sessions.
PAPER_MIX_NORMAL = 553_366
PAPER_MIX_ANOMALOUS = 16_838


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def detection_metrics(
    normal_scores: np.ndarray, anomalous_scores: np.ndarray, threshold: float | np.ndarray
) -> dict[str, Any]:
    """Metrics for ``score > threshold`` = anomalous. ``threshold`` may be one value or one per
    session (dynamic thresholds: normal sessions first, then anomalous, as concatenated)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), len(normal_scores) + len(anomalous_scores))
    flagged_normal = normal_scores > thresholds[: len(normal_scores)]
    flagged_anomalous = anomalous_scores > thresholds[len(normal_scores) :]
    tp = int(flagged_anomalous.sum())
    fn = len(anomalous_scores) - tp
    fp = int(flagged_normal.sum())
    tn = len(normal_scores) - fp
    tpr = _safe_div(tp, tp + fn)
    fpr = _safe_div(fp, fp + tn)
    precision = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * precision * tpr, precision + tpr)
    precision_mix = _safe_div(tpr * PAPER_MIX_ANOMALOUS, tpr * PAPER_MIX_ANOMALOUS + fpr * PAPER_MIX_NORMAL)
    labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomalous_scores))]
    scores = np.r_[normal_scores, anomalous_scores]
    return {
        "precision": precision,
        "recall": tpr,
        "f1": f1,
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr": float(average_precision_score(labels, scores)),
        "tpr": tpr,
        "fpr": fpr,
        "precision_paper_mix": precision_mix,
        "f1_paper_mix": _safe_div(2 * precision_mix * tpr, precision_mix + tpr),
        "threshold": float(np.median(thresholds)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "normal_sessions": len(normal_scores),
        "anomalous_sessions": len(anomalous_scores),
    }


def plot_distributions(
    normal_scores: np.ndarray, anomalous_scores: np.ndarray, threshold: float, path: str, title: str
) -> None:
    """Histogram of normal vs anomalous session scores (log-scaled counts) with the threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    low = min(normal_scores.min(), anomalous_scores.min())
    high = max(normal_scores.max(), anomalous_scores.max(), threshold)
    bins = np.linspace(low, high, 80)
    ax.hist(normal_scores, bins=bins, alpha=0.6, label=f"normal ({len(normal_scores)})", color="tab:blue")
    ax.hist(anomalous_scores, bins=bins, alpha=0.6, label=f"anomalous ({len(anomalous_scores)})", color="tab:red")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("session anomaly score")
    ax.set_ylabel("sessions (log scale)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
