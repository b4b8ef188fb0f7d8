"""Cheap detectors measured beside every model (``eval --baseline``), fitted on normal sessions only.

* ``new-event``: a session is anomalous when it holds a key never seen in training (Landauer et al.,
  FSE 2024: this alone reaches F1 0.988 on BGL). Score = the number of unseen keys; threshold 0.5, i.e.
  one unseen key is enough. The only "training" is the vocabulary, so it needs no extra bundle file.
* ``counts-pca``: PCA on key-count vectors (Xu et al., SOSP 2009, as in loglizer): the normal space is
  spanned by the principal components explaining ``variance`` of the normal training counts; score = the
  squared prediction error (SPE, squared norm of the residual outside that space). Unseen keys count in
  one extra UNK column, which normal training never fills, so they land in the residual. Threshold = the
  model's quantile of the SPE of the normal validation split (the same split the model's threshold uses),
  plus the model's parity margin.

``fit_baselines`` writes nothing; ``save_baselines`` / ``load_baselines`` keep the fitted state in the
bundle's ``baselines.json`` (JSON only, like every bundle file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from otel_logbert.errors import BundleError
from otel_logbert.parsing.vocabulary import FIRST_KEY_ID, UNK_ID, Vocabulary
from otel_logbert.safe_files import read_json

BASELINES_FILE = "baselines.json"
NEW_EVENT = "new-event"
COUNTS_PCA = "counts-pca"
# Share of the normal count variance the PCA normal space keeps (loglizer's default).
DEFAULT_VARIANCE = 0.95
# Relative margin above the validation quantile (the trainer's THRESHOLD_MARGIN; not imported to keep
# this module free of torch).
MARGIN = 1e-4


def count_vectors(sessions: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Encoded sessions (token ids) -> (N, K+1) counts: one column per known key, the last for UNK."""
    n_keys = vocab_size - FIRST_KEY_ID
    out = np.zeros((len(sessions), n_keys + 1), dtype=np.float64)
    for row, tokens in enumerate(sessions):
        for token in tokens:
            column = n_keys if token == UNK_ID or token < FIRST_KEY_ID or token >= vocab_size else token - FIRST_KEY_ID
            out[row, column] += 1.0
    return out


def new_event_scores(sessions: Sequence[Sequence[int]]) -> np.ndarray:
    """Number of keys never seen in training (UNK) in each encoded session."""
    return np.array([sum(1 for t in s if t == UNK_ID) for s in sessions], dtype=np.float64)


def _threshold(validation_scores: np.ndarray, quantile: float) -> float:
    value = float(np.quantile(validation_scores, quantile))
    return value + MARGIN * max(1.0, abs(value))


@dataclass
class CountPCA:
    """SPE of key-count vectors outside the normal principal subspace. Arrays: mean (F,), components (k, F)."""

    mean: np.ndarray
    components: np.ndarray
    threshold: float
    quantile: float
    variance: float

    @classmethod
    def fit(cls, train: np.ndarray, validation: np.ndarray, quantile: float,
            variance: float = DEFAULT_VARIANCE) -> CountPCA:
        """``train``/``validation``: count vectors of normal sessions. The threshold is the ``quantile``
        of the validation SPE plus a margin."""
        from sklearn.decomposition import PCA

        mean = train.mean(axis=0)
        if np.allclose(train, mean):  # one kind of session only: the normal space is the mean itself
            components = np.zeros((0, train.shape[1]))
        else:
            pca = PCA(n_components=variance, svd_solver="full").fit(train)
            components = pca.components_
        model = cls(mean, components, 0.0, quantile, variance)
        model.threshold = _threshold(model.score(validation), quantile)
        return model

    def score(self, counts: np.ndarray) -> np.ndarray:
        centered = counts - self.mean  # (N, F)
        residual = centered - (centered @ self.components.T) @ self.components
        return (residual ** 2).sum(axis=1)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "components": self.components.tolist(), "threshold": self.threshold,
                "quantile": self.quantile, "variance": self.variance,
                "method": "quantile of the normal validation SPE outside the PCA space of normal counts, plus a margin"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CountPCA:
        mean = np.asarray(data["mean"], dtype=np.float64)
        components = np.asarray(data["components"], dtype=np.float64).reshape(-1, len(mean))
        return cls(mean, components, float(data["threshold"]), float(data["quantile"]), float(data["variance"]))


def fit_baselines(train: Sequence[Sequence[str]], validation: Sequence[Sequence[str]], vocab: Vocabulary,
                  quantile: float) -> dict[str, Any]:
    """Fit every stored baseline on normal ``train`` / ``validation`` sessions (keys); returns the JSON."""
    size = len(vocab)
    pca = CountPCA.fit(count_vectors([vocab.encode(s) for s in train], size),
                       count_vectors([vocab.encode(s) for s in validation], size), quantile)
    return {COUNTS_PCA: pca.to_json(), "train_sessions": len(train), "validation_sessions": len(validation)}


def save_baselines(bundle_dir: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(bundle_dir) / BASELINES_FILE
    path.write_text(json.dumps(data) + "\n")
    return path


def load_baselines(bundle_dir: str | Path) -> dict[str, Any] | None:
    """The bundle's ``baselines.json``, or None when it has none. Raises ``BundleError`` when unreadable."""
    path = Path(bundle_dir) / BASELINES_FILE
    try:
        data = read_json(bundle_dir, BASELINES_FILE)  # inside the bundle, regular, bounded, JSON
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def baseline_scores(name: str, sessions: Sequence[Sequence[int]], vocab_size: int,
                    stored: Mapping[str, Any] | None) -> tuple[np.ndarray, float]:
    """Scores and threshold of baseline ``name`` for encoded sessions. Raises ``BundleError`` when the
    bundle lacks what it needs."""
    if name == NEW_EVENT:
        return new_event_scores(sessions), 0.5
    if name == COUNTS_PCA:
        if not stored or COUNTS_PCA not in stored:
            raise BundleError(f"no {BASELINES_FILE} with {COUNTS_PCA} in the bundle; retrain it with this version")
        pca = CountPCA.from_json(stored[COUNTS_PCA])
        return pca.score(count_vectors(sessions, vocab_size)), pca.threshold
    raise ValueError(f"unknown baseline {name!r}")
