"""The ``Scorer`` interface: batches of encoded sessions in, raw scores and per-key evidence out.

A scorer knows nothing of thresholds: the caller applies a static threshold from the bundle or a
dynamic one (``scoring.dtpm``). Sessions longer than the model's ``max_len`` are scored in chunks
of ``max_len`` and the session score is the maximum over its chunks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class ScoringError(Exception):
    """Scoring failed (backend down, timeout, bad model). Callers fail open: records go on unscored."""


@dataclass(frozen=True)
class SessionScore:
    """Raw anomaly score of one session (higher = more anomalous) and, where the model gives it,
    one flag per key of the session (True = the key was unexpected)."""

    score: float
    unexpected: tuple[bool, ...] | None = None


class Scorer(ABC):
    """Scores sessions of token ids (already encoded with the bundle's vocabulary)."""

    model_name: str
    model_version: str

    @abstractmethod
    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        """One ``SessionScore`` per input session, in order. Raises ``ScoringError`` on failure."""

    def ready(self) -> bool:
        """True when the scorer can take requests now."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most scorers hold nothing to release
        """Release resources; idempotent."""
