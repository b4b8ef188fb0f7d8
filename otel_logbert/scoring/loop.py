"""The scoring loop: closed sessions in, verdicts out, in batches, failing open.

Closed sessions queue up here. A batch is taken at once when no batch is being scored; otherwise when
``batch_size`` sessions wait or ``batch_timeout_ms`` after the first of them arrived, whichever comes
first. It is split by lane and each part is scored
by the lane's scorer in the lane's worker thread (ONNX Runtime releases the GIL, so the event loop
keeps receiving meanwhile). A part that raises, or takes longer than ``timeout_s``, yields
``unscored`` verdicts with the reason: records are never held back by a failing model.

Thresholds are applied on the event loop, in closing order, so dynamic thresholds see one ordered
score stream; the lane's threshold policy alone decides ``is_anomaly`` (``Lane.verdict``). Results go
to ``on_scored(sessions, verdicts)``. Batching is the shared ``Batcher``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from otel_logbert.batcher import Batcher
from otel_logbert.config import ScoringConfig
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.sessions.session import Session, Verdict
from otel_logbert.sidecar.lanes import Lane, Router

log = logging.getLogger(__name__)

LEARN_ONLY_REASON = "learn mode: scoring disabled"
MAX_IN_FLIGHT_BATCHES = 4

OnScored = Callable[[list[Session], list[Verdict]], None]


class ScoringLoop:
    """Closed sessions in (``submit``), ``on_scored(sessions, verdicts)`` out, in closing order per
    batch. Records its own metrics (``scoring_duration``, ``sessions_scored``, ``sessions_unscored``).
    ``pending_records`` (records of sessions queued or being scored) is what back-pressure counts."""

    def __init__(self, router: Router, on_scored: OnScored, config: ScoringConfig, metrics: Metrics) -> None:
        """Raises ``ValueError`` for a ``batch_size`` below 1 or a negative ``batch_timeout_ms``."""
        self.router = router
        self.on_scored = on_scored
        self.timeout_s = config.timeout_s
        self.metrics = metrics
        self._batcher: Batcher[Session] = Batcher(
            self._score_batch,
            max_batch=config.batch_size,
            max_in_flight=MAX_IN_FLIGHT_BATCHES,
            linger_s=config.batch_timeout_ms / 1000,
            weight=_record_count,
        )
        self._executors = {
            lane.index: ThreadPoolExecutor(1, thread_name_prefix=f"score-{lane.name}")
            for lane in router.lanes
            if lane.scorer is not None
        }

    @property
    def pending_records(self) -> int:
        return self._batcher.pending

    def submit(self, sessions: list[Session]) -> None:
        """Queue closed sessions for scoring (never blocks, never refuses)."""
        self._batcher.put(sessions)

    async def run(self) -> None:
        """Take batches forever (until cancelled): an idle scorer gets what is queued at once (low
        latency at low load); while batches are in flight, a batch waits to fill up to
        ``batch_size`` for at most ``batch_timeout_ms`` (large batches at high load)."""
        await self._batcher.run()

    async def drain(self) -> None:
        """Score everything queued now and wait for every batch in flight (used at shutdown)."""
        await self._batcher.drain()

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    async def _score_batch(self, batch: list[Session]) -> None:
        by_lane: dict[int, list[Session]] = {}
        for session in batch:
            by_lane.setdefault(session.lane, []).append(session)
        parts = [self._score_lane(self.router.lanes[index], sessions) for index, sessions in by_lane.items()]
        for sessions, verdicts in await asyncio.gather(*parts):
            self.on_scored(sessions, verdicts)

    async def _score_lane(self, lane: Lane, sessions: list[Session]) -> tuple[list[Session], list[Verdict]]:
        if lane.scorer is None:
            return sessions, [Verdict.unscored(LEARN_ONLY_REASON)] * len(sessions)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executors[lane.index], lane.score, [s.keys for s in sessions])
        try:
            scores = await asyncio.wait_for(call, self.timeout_s)
            if len(scores) != len(sessions):
                raise RuntimeError(f"scorer returned {len(scores)} scores for {len(sessions)} sessions")
        except asyncio.TimeoutError:
            reason = f"scoring timed out after {self.timeout_s:g}s"
            return sessions, self._failed(lane, sessions, reason, started, "timeout")
        except Exception as exc:  # fail open on anything the backend raises
            reason = f"scoring failed: {_one_line(exc)}"
            return sessions, self._failed(lane, sessions, reason, started, "error")
        self.metrics.scoring_duration.record(time.perf_counter() - started, {"outcome": "scored"})
        self.metrics.sessions_scored.add(len(sessions))
        return sessions, [lane.verdict(session, result) for session, result in zip(sessions, scores, strict=True)]

    def _failed(
        self, lane: Lane, sessions: list[Session], reason: str, started: float, outcome: str
    ) -> list[Verdict]:
        log.warning(
            "scoring failed; records go on unscored",
            extra={"lane": lane.name, "sessions": len(sessions), "reason": reason},
        )
        self.metrics.scoring_duration.record(time.perf_counter() - started, {"outcome": outcome})
        self.metrics.sessions_unscored.add(len(sessions), {"outcome": outcome})
        return [Verdict.unscored(reason, lane.model, lane.model_version)] * len(sessions)


def _record_count(session: Session) -> int:
    return session.n_records


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
