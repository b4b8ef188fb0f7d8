"""The scoring loop: closed sessions in, verdicts out, in batches, failing open.

Closed sessions queue up here. A batch is taken at once when no batch is being scored; otherwise when
``batch_size`` sessions wait or ``batch_timeout_s`` after the first of them arrived, whichever comes
first. It is split by lane and each part is scored
by the lane's scorer in the lane's worker thread (ONNX Runtime releases the GIL, so the event loop
keeps receiving meanwhile). A part that raises, or takes longer than ``timeout_s``, yields
``unscored`` verdicts with the reason: records are never held back by a failing model.

Thresholds are applied on the event loop, in closing order, so dynamic thresholds see one ordered
score stream. Results go to ``on_scored(sessions, verdicts)``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from otel_logbert.sessions.lanes import Lane, Router
from otel_logbert.sessions.session import Session, Verdict

log = logging.getLogger(__name__)

LEARN_ONLY_REASON = "learn mode: scoring disabled"
MAX_IN_FLIGHT_BATCHES = 4

OnScored = Callable[[list[Session], list[Verdict]], None]
Observe = Callable[[str, float, int], None]  # (outcome, seconds, sessions) after each scored part


class ScoringLoop:
    def __init__(
        self,
        router: Router,
        on_scored: OnScored,
        *,
        batch_size: int = 256,
        batch_timeout_s: float = 0.02,
        timeout_s: float = 2.0,
        observe: Observe | None = None,
    ) -> None:
        self.router = router
        self.on_scored = on_scored
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.timeout_s = timeout_s
        self.observe = observe
        self._queue: deque[Session] = deque()
        self._first_at = 0.0
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT_BATCHES)
        self._executors = {
            lane.index: ThreadPoolExecutor(1, thread_name_prefix=f"score-{lane.name}")
            for lane in router.lanes
            if lane.scorer is not None
        }
        self.pending_records = 0  # records of sessions queued or being scored

    def submit(self, sessions: list[Session]) -> None:
        """Queue closed sessions for scoring (never blocks, never refuses)."""
        if not sessions:
            return
        if not self._queue:
            self._first_at = time.monotonic()
        self._queue.extend(sessions)
        self.pending_records += sum(len(s.records) for s in sessions)
        self._wakeup.set()

    @property
    def queued_sessions(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Take batches forever (until cancelled). An idle scorer gets what is queued at once (low
        latency at low load); while batches are in flight, a batch waits to fill up to
        ``batch_size`` for at most ``batch_timeout_s`` (large batches at high load)."""
        while True:
            await self._wakeup.wait()
            if self._in_flight and len(self._queue) < self.batch_size:
                delay = self._first_at + self.batch_timeout_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._slots.acquire()
            batch = self._take()
            if not self._queue:
                self._wakeup.clear()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._score_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def drain(self) -> None:
        """Score everything queued now and wait for every batch in flight (used at shutdown)."""
        while self._queue:
            await self._slots.acquire()
            task = asyncio.create_task(self._score_batch(self._take()))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> list[Session]:
        batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
        if self._queue:
            self._first_at = time.monotonic()
        return batch

    async def _score_batch(self, batch: list[Session]) -> None:
        try:
            by_lane: dict[int, list[Session]] = {}
            for session in batch:
                by_lane.setdefault(session.lane, []).append(session)
            parts = [
                self._score_lane(self.router.lanes[index], sessions) for index, sessions in by_lane.items()
            ]
            for sessions, verdicts in await asyncio.gather(*parts):
                self.pending_records -= sum(len(s.records) for s in sessions)
                self.on_scored(sessions, verdicts)
        finally:
            self._slots.release()

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
        if self.observe is not None:
            self.observe("scored", time.perf_counter() - started, len(sessions))
        assert lane.threshold is not None
        verdicts = []
        for session, result in zip(sessions, scores, strict=True):
            score = float(result.score)
            if not math.isfinite(score):
                verdicts.append(
                    Verdict.unscored("model returned a non-finite score", lane.model, lane.model_version)
                )
                continue
            threshold, is_anomaly = lane.threshold.judge(session.service, score)
            unexpected = result.unexpected
            if unexpected is not None and len(unexpected) != len(session.keys):
                unexpected = None  # evidence that does not line up with the keys is not shown
            verdicts.append(
                Verdict(
                    status="scored",
                    model=lane.model,
                    model_version=lane.model_version,
                    score=score,
                    threshold=threshold,
                    is_anomaly=score > threshold,
                    unexpected=unexpected,
                )
            )
        return sessions, verdicts

    def _failed(
        self, lane: Lane, sessions: list[Session], reason: str, started: float, outcome: str
    ) -> list[Verdict]:
        log.warning(
            "scoring failed; records go on unscored",
            extra={"lane": lane.name, "sessions": len(sessions), "reason": reason},
        )
        if self.observe is not None:
            self.observe(outcome, time.perf_counter() - started, len(sessions))
        return [Verdict.unscored(reason, lane.model, lane.model_version)] * len(sessions)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
