"""Threshold policies: raw session score -> the threshold it is compared against.

``scoring.threshold: static`` uses the bundle's threshold (chosen on normal validation data at
training time). ``dtpm`` keeps one streaming ``DynamicThreshold`` (``scoring.dtpm``) per session
key group, here the ``service.name`` of the session's first record, so each service's score stream
calibrates its own threshold. Policies are called from the sidecar's event loop, one session at a
time, in closing order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol


class StreamingThreshold(Protocol):
    """What ``scoring.dtpm.DynamicThreshold`` provides: judge a score, learn from it."""

    def update(self, score: float) -> tuple[float, bool]:
        """(threshold used, is_anomaly) for ``score``."""
        ...


class ThresholdPolicy(ABC):
    name: str

    @abstractmethod
    def judge(self, group: str, score: float) -> tuple[float, bool]:
        """(threshold, is_anomaly) for ``score`` of a session in ``group``. May update internal
        state (dynamic policies)."""


class StaticThreshold(ThresholdPolicy):
    """Anomalous when ``score > value``."""

    name = "static"

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def judge(self, group: str, score: float) -> tuple[float, bool]:
        return self.value, score > self.value


class DynamicThresholdPolicy(ThresholdPolicy):
    """One streaming threshold per group, created on first use by ``factory``. At most
    ``max_groups`` are kept; beyond that new groups share the ``""`` group's threshold."""

    name = "dtpm"

    def __init__(self, factory: Callable[[], StreamingThreshold], max_groups: int = 10_000) -> None:
        self.factory = factory
        self.max_groups = max_groups
        self._groups: dict[str, StreamingThreshold] = {}

    def judge(self, group: str, score: float) -> tuple[float, bool]:
        state = self._groups.get(group)
        if state is None:
            if len(self._groups) >= self.max_groups:
                group = ""
            state = self._groups.get(group)
            if state is None:
                state = self._groups[group] = self.factory()
        threshold, is_anomaly = state.update(score)
        return float(threshold), bool(is_anomaly)
