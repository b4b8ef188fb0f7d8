"""The embedded scorer: a bundle's ``model.onnx`` run in-process with ONNX Runtime on the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from otel_logbert.bundle import ONNX_FILE, Bundle, model_file
from otel_logbert.errors import BundleError
from otel_logbert.scoring.base import Scorer, ScoringError, SessionScore
from otel_logbert.scoring.batching import score_sessions

DEFAULT_BATCH_SIZE = 256


class OnnxScorer(Scorer):
    """Scores with ONNX Runtime. ``threads`` bounds intra-op threads (0 = ONNX Runtime's default)."""

    def __init__(self, bundle: Bundle, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int = 0) -> None:
        import onnxruntime as ort

        model_path = model_file(bundle, ONNX_FILE)  # inside the bundle, regular, bounded
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{bundle.onnx_path}: ONNX Runtime cannot load it ({exc})") from None
        self.model_name = bundle.model
        self.model_version = bundle.model_version
        self.max_len = bundle.max_len
        self.batch_size = batch_size

    def _run(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, evidence = self._session.run(["score", "evidence"], {"tokens": tokens})
        return score, evidence

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        try:
            return score_sessions(sessions, self._run, self.max_len, self.batch_size)
        except Exception as exc:
            raise ScoringError(f"ONNX Runtime scoring failed: {exc}") from exc
