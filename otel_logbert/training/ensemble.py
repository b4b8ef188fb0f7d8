"""Seed ensembles: K members trained on the same sessions with different seeds, one score.

One trained model puts a few rare normal sessions among the anomalies, and which ones depends on the
training run (issue 10: the validation maximum of one HDFS model ranks above 17% of the anomalies; the
same session held out from four other models scores like an ordinary normal one). Averaging members
trained with different seeds keeps what they agree on. Scores of different members are in different
units, so each member's score is made unit-free with its own normal validation scores first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Member i of an ensemble trained with --seed S uses seed S + MEMBER_SEED_STRIDE * i: member 0 is the
# model a single-model bundle of the same seed holds, and members of seeds < 1000 never coincide.
MEMBER_SEED_STRIDE = 1000
# The member's unit: (score - median) / (quantile(REFERENCE_QUANTILE) - median) of its validation scores.
REFERENCE_QUANTILE = 0.95
MIN_SCALE = 1e-6


def member_seed(seed: int, member: int) -> int:
    """The training seed of ``member`` (0-based) in an ensemble trained with ``seed``."""
    return seed + MEMBER_SEED_STRIDE * member


def member_units(validation_scores: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """(location, scale) per member from its normal validation scores: the median and the distance
    from the median to the ``REFERENCE_QUANTILE`` quantile (at least ``MIN_SCALE``). Both are central
    statistics of ~1,000 sessions, so they do not hinge on one session the way a maximum does."""
    units = []
    for scores in validation_scores:
        median, reference = np.quantile(np.asarray(scores, dtype=np.float64), [0.5, REFERENCE_QUANTILE])
        units.append((float(median), max(float(reference - median), MIN_SCALE)))
    return units


def combine(member_scores: Sequence[np.ndarray], units: Sequence[tuple[float, float]]) -> np.ndarray:
    """The ensemble score of each session: the mean over members of its unit-free score."""
    if len(member_scores) != len(units):
        raise ValueError(f"{len(member_scores)} members' scores but {len(units)} units")
    return np.mean([(np.asarray(s, dtype=np.float64) - loc) / scale
                    for s, (loc, scale) in zip(member_scores, units, strict=True)], axis=0)
