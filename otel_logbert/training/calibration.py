"""Choosing the static threshold from normal scores alone.

Rules (``training.calibration``):

* ``auto`` (default): ``quantile`` when the validation split holds at least 1 / ``target_fpr`` sessions,
  ``pot`` when it would hold fewer (a small training set: every session then gets an out-of-fold score
  instead of a fifth of them a validation score). ``resolve`` says which.
* ``pot``: peaks over threshold, as in SPOT (Siffer et al., KDD 2017). The scores are the
  out-of-fold scores of every normal training session (see ``trainer``). Exceedances over the
  ``tail_quantile`` quantile ``u`` are fitted with a generalized Pareto distribution (shape xi, scale
  sigma); the threshold for a false-alarm rate ``q`` is SPOT's
  ``z_q = u + sigma / xi * ((q * n / n_u) ** -xi - 1)`` (``u - sigma * log(q * n / n_u)`` for xi = 0),
  n sessions, n_u of them above ``u``. Where ``q`` is no smaller than the share above ``u`` the tail
  model is not needed and the empirical ``1 - q`` quantile is used. With fewer than
  ``MIN_EXCEEDANCES`` exceedances no tail can be fitted: the threshold is the largest score (the most
  that few sessions tell), and the training set counts as too small for ``q``. Where the data hold
  ``MIN_CHECKED_SESSIONS`` or more sessions above the target, a fit whose threshold the data exceed at
  a rate off the target by more than 2x is rejected for the empirical quantile (clumped scores).
* ``quantile``: the ``threshold_quantile`` quantile of one normal validation split's scores (the rule
  before ``pot``); ``max``: the same with quantile 1.0, the largest validation score.

No anomaly label enters here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

CALIBRATIONS = ("auto", "quantile", "max", "pot")
# Fewer exceedances than this over ``u`` and no tail is fitted (an MLE over a handful of points
# extrapolates wildly). With the default tail_quantile 0.98 that is 500 sessions, 1 / the default
# target_fpr.
MIN_EXCEEDANCES = 10
# Where the data hold at least this many sessions above the target quantile, the fitted tail is checked
# against them (a fit whose threshold the data exceed at under half or over twice the target is rejected).
MIN_CHECKED_SESSIONS = 5


@dataclass(frozen=True)
class TailFit:
    """How a ``pot`` threshold was found: ``rule`` is ``gpd``, ``empirical``, ``empirical (gpd rejected)``
    or ``max``."""

    threshold: float
    rule: str
    sessions: int
    u: float
    exceedances: int
    shape: float | None = None
    scale: float | None = None

    def to_json(self) -> dict:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def fit_gpd(excess: np.ndarray) -> tuple[float, float]:
    """(shape xi, scale sigma) of a generalized Pareto distribution fitted (maximum likelihood, location
    0) to positive ``excess`` values."""
    from scipy.stats import genpareto

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shape, _, scale = genpareto.fit(excess, floc=0.0)
    return float(shape), float(scale)


def pot_threshold(scores: np.ndarray, target_fpr: float, tail_quantile: float = 0.98) -> TailFit:
    """The threshold above which a share ``target_fpr`` of normal sessions is expected (module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    u = float(np.quantile(scores, tail_quantile))
    excess = scores[scores > u] - u
    n_u = len(excess)
    if target_fpr * n >= n_u and n_u > 0:
        value = float(np.quantile(scores, 1.0 - target_fpr))
        return TailFit(value, "empirical", n, u, n_u)
    if n_u < MIN_EXCEEDANCES:
        return TailFit(float(scores.max()), "max", n, u, n_u)
    shape, scale = fit_gpd(excess)
    ratio = target_fpr * n / n_u
    exponential = abs(shape) < 1e-6  # the xi -> 0 limit
    value = u - scale * math.log(ratio) if exponential else u + scale / shape * (ratio ** -shape - 1.0)
    if not math.isfinite(value):  # a degenerate fit: fall back to the largest score
        return TailFit(float(scores.max()), "max", n, u, n_u, shape, scale)
    if target_fpr * n >= MIN_CHECKED_SESSIONS:
        # The target lies inside the data: the fit must reproduce it there. Clumped scores (HDFS repeats
        # a few hundred orderings thousands of times) give absurd shapes (xi > 2) whose quantile is far
        # from the data's own; then the data's 1 - q quantile is the threshold.
        achieved = float((scores > value).mean())
        if not target_fpr / 2 <= achieved <= target_fpr * 2:
            empirical = float(np.quantile(scores, 1.0 - target_fpr))
            return TailFit(empirical, "empirical (gpd rejected)", n, u, n_u, shape, scale)
    return TailFit(float(value), "gpd", n, u, n_u, shape, scale)


def resolve(calibration: str, sessions: int, val_fraction: float, target_fpr: float) -> str:
    """The rule ``calibration`` means for a training set of ``sessions`` (``auto`` chooses, see above)."""
    if calibration != "auto":
        return calibration
    return "pot" if too_small(int(sessions * val_fraction), target_fpr) else "quantile"


def too_small(sessions: int, target_fpr: float) -> bool:
    """Whether ``sessions`` normal sessions are too few to calibrate ``target_fpr`` (fewer than 1/q)."""
    return sessions < 1.0 / target_fpr


def fold_indices(n: int, folds: int, seed: int) -> list[list[int]]:
    """``folds`` disjoint, near-equal, shuffled index lists covering range(n) (deterministic)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [sorted(order[i::folds]) for i in range(folds)]
