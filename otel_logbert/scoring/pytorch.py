"""Scoring with the PyTorch model itself (``eval`` before export, and the ONNX parity tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from otel_logbert.scoring.base import Scorer, SessionScore
from otel_logbert.scoring.batching import score_sessions


class TorchScorer(Scorer):
    def __init__(self, model: nn.Module, *, model_name: str, model_version: str, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.model_name = model_name
        self.model_version = model_version
        self.max_len = int(model.cfg.max_len)
        self.batch_size = batch_size

    @torch.no_grad()
    def _run(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, evidence = self.model(torch.from_numpy(tokens))
        return score.numpy(), evidence.numpy()

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        return score_sessions(sessions, self._run, self.max_len, self.batch_size)
