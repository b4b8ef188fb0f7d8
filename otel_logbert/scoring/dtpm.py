"""DTPM, the dynamic threshold of BERT-LogAnom, as a policy over any model's score stream.

Two layers:

* a fast EWMA layer (smoothing ``alpha`` = 0.2) tracking the mean and variance of the scores it
  accepted as normal, plus a short window of them;
* a small gated calibration network over those statistics (scaled by the static threshold T):
  ``(gate, kappa) = net(x)``, threshold = gate * (mu + kappa * sigma) + (1 - gate) * T.

Only scores judged normal update the statistics, so a burst of anomalies does not drag the
threshold up. The network is fitted on normal validation scores only (pinball loss at quantile
``tau`` against the next score of shuffled normal streams), never on anomaly labels. Serving uses
the NumPy forward below; fitting needs torch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALPHA = 0.2
WINDOW = 32
HIDDEN = 16
N_FEATURES = 6


@dataclass
class DTPMParams:
    """Fitted parameters (JSON in the bundle's threshold.json under ``dtpm``)."""

    static_threshold: float
    w1: list[list[float]]  # (HIDDEN, N_FEATURES)
    b1: list[float]
    w2: list[list[float]]  # (2, HIDDEN): gate logit, kappa pre-activation
    b2: list[float]
    alpha: float = ALPHA
    window: int = WINDOW
    tau: float = 0.999
    warmup_scores: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DTPMParams:
        return cls(**data)


def features(mu: float, var: float, last: float, window: np.ndarray, static: float) -> np.ndarray:
    """Scale-free statistics of the accepted-score stream, (N_FEATURES,)."""
    scale = max(abs(static), 1e-6)
    sigma = float(np.sqrt(max(var, 0.0)))
    return np.array([
        mu / scale, sigma / scale, last / scale, float(window.max()) / scale, float(window.mean()) / scale,
        float(np.log1p(len(window))) / np.log1p(WINDOW),
    ], dtype=np.float64)


class EwmaStats:
    """The fast layer: EWMA mean and variance (smoothing ``alpha``) of accepted scores, plus the last
    ``window`` of them."""

    def __init__(self, alpha: float, window: int) -> None:
        self.alpha = alpha
        self.window: deque[float] = deque(maxlen=window)
        self.mu = 0.0
        self.var = 0.0

    def accept(self, score: float) -> None:
        if not self.window:
            self.mu, self.var = score, 0.0
        else:
            delta = score - self.mu
            self.mu += self.alpha * delta
            self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)
        self.window.append(score)

    @property
    def sigma(self) -> float:
        return float(np.sqrt(max(self.var, 0.0)))

    def features(self, static: float) -> np.ndarray:
        return features(self.mu, self.var, self.window[-1], np.asarray(self.window), static)


class DynamicThreshold:
    """Stateful DTPM for one score stream (the sidecar keeps one per session-key group)."""

    def __init__(self, params: DTPMParams) -> None:
        self.p = params
        self._w1 = np.asarray(params.w1)
        self._b1 = np.asarray(params.b1)
        self._w2 = np.asarray(params.w2)
        self._b2 = np.asarray(params.b2)
        self.stats = EwmaStats(params.alpha, params.window)
        for score in params.warmup_scores:
            self.stats.accept(score)

    def current(self) -> float:
        """The threshold for the next score."""
        if not self.stats.window:
            return self.p.static_threshold
        hidden = np.tanh(self._w1 @ self.stats.features(self.p.static_threshold) + self._b1)
        gate_logit, kappa_raw = self._w2 @ hidden + self._b2
        gate = 1.0 / (1.0 + np.exp(-gate_logit))
        kappa = np.logaddexp(0.0, kappa_raw)  # softplus
        dynamic = self.stats.mu + kappa * self.stats.sigma
        return float(gate * dynamic + (1.0 - gate) * self.p.static_threshold)

    def update(self, score: float) -> tuple[float, bool]:
        """Judge ``score`` against the current threshold; learn from it if normal.
        Returns (threshold used, is_anomaly)."""
        threshold = self.current()
        is_anomaly = score > threshold
        if not is_anomaly:
            self.stats.accept(score)
        return threshold, is_anomaly


def fit_dtpm(
    normal_scores: np.ndarray, static_threshold: float, *, tau: float = 0.999, epochs: int = 200, seed: int = 0,
    streams: int = 64,
) -> DTPMParams:
    """Fit the calibration network on shuffled streams of normal validation scores.

    Loss: pinball loss at quantile ``tau`` between the threshold before each score and that score,
    so the threshold tracks a high quantile of what normal traffic does next.
    """
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    scores = np.asarray(normal_scores, dtype=np.float64)
    length = min(len(scores), 256)
    xs, ys = [], []
    for _ in range(streams):  # replay the EWMA layer over shuffled normal streams to build features
        stream = rng.permutation(scores)[:length]
        stats = EwmaStats(ALPHA, WINDOW)
        for score in stream:
            if stats.window:
                xs.append(stats.features(static_threshold))
                ys.append([score, stats.mu, stats.sigma])
            stats.accept(float(score))
    x = torch.tensor(np.array(xs), dtype=torch.float32)
    y = torch.tensor(np.array(ys), dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        out = net(x)
        gate = torch.sigmoid(out[:, 0])
        kappa = torch.nn.functional.softplus(out[:, 1])
        threshold = gate * (y[:, 1] + kappa * y[:, 2]) + (1 - gate) * static_threshold
        error = y[:, 0] - threshold
        loss = torch.maximum(tau * error, (tau - 1) * error).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    w1, b1, w2, b2 = (t.detach().double().numpy().tolist() for t in net.parameters())
    return DTPMParams(static_threshold, w1, b1, w2, b2, tau=tau,
                      warmup_scores=[float(s) for s in rng.permutation(scores)[:WINDOW]])
