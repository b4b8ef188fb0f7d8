"""scoring.loop: batching, thresholds, and failing open (errors, timeouts, learn-only).

The scorer here is a small deterministic ``Scorer`` implementation (score = share of unknown keys)
so that batching and failure handling can be driven exactly; the ONNX scorer is exercised by the
sidecar tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from otel_logbert.config import ScoringConfig
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary
from otel_logbert.scoring.base import Scorer, ScoringError, SessionScore
from otel_logbert.scoring.loop import LEARN_ONLY_REASON, ScoringLoop
from otel_logbert.scoring.thresholds import DynamicThresholdPolicy, StaticThreshold
from otel_logbert.sessions.session import Origin, Record, Session, Verdict
from otel_logbert.sidecar.lanes import Lane, Router


class UnknownShareScorer(Scorer):
    model_name, model_version = "share", "1"

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.batches: list[int] = []
        self.release = threading.Event()

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        self.batches.append(len(sessions))
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.fail:
            raise ScoringError("backend exploded\nsecond line")
        return [SessionScore(sum(t == UNK_ID for t in s) / len(s), tuple(t == UNK_ID for t in s)) for s in sessions]


def lane(scorer: Scorer | None, index: int = 0, threshold: float = 0.4) -> Lane:
    return Lane(index=index, name=f"lane{index}", parser=LogParser(), template_attribute="t",
                scorer=scorer, vocab=Vocabulary(["a", "b"]), threshold=StaticThreshold(threshold),
                model="share", model_version="1")


def session(keys: list[str], lane_index: int = 0, service: str = "svc") -> Session:
    s = Session(key=tuple(keys), serial=1, lane=lane_index, now=0.0)
    origin = Origin(None, b"", None, b"", service)
    for key in keys:
        s.append(key, Record(key.encode(), origin), 0.0, 0, by_time=False)
    return s


def make_loop(
    router: Router, batch_size: int = 256, batch_timeout_s: float = 0.02, timeout_s: float = 2.0
) -> ScoringLoop:
    config = ScoringConfig(batch_size=batch_size, batch_timeout_ms=batch_timeout_s * 1000, timeout_s=timeout_s)
    return ScoringLoop(router, collect, config, Metrics())


def run_loop(loop: ScoringLoop, sessions: list[Session], wait_for: int, timeout_s: float = 5.0) -> None:
    async def main() -> None:
        task = asyncio.create_task(loop.run())
        loop.submit(sessions)
        deadline = time.monotonic() + timeout_s
        while len(results) < wait_for and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        task.cancel()
        await loop.drain()

    asyncio.run(main())


results: list[tuple[Session, Verdict]] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    results.clear()


def collect(sessions: list[Session], verdicts: list[Verdict]) -> None:
    results.extend(zip(sessions, verdicts, strict=True))


def test_scores_threshold_and_per_key_evidence() -> None:
    loop = make_loop(Router([lane(UnknownShareScorer())], {}), batch_size=8, batch_timeout_s=0.01)
    run_loop(loop, [session(["a", "b"]), session(["a", "zzz", "b"])], wait_for=2)
    (s1, v1), (s2, v2) = results
    assert v1.status == "scored" and v1.score == 0.0 and v1.is_anomaly is False and v1.threshold == 0.4
    assert v2.is_anomaly is False and v2.score == pytest.approx(1 / 3)
    assert v2.unexpected == (False, True, False)
    assert v1.model == "share" and v1.model_version == "1"
    assert loop.pending_records == 0


def test_batches_fill_up_to_batch_size() -> None:
    scorer = UnknownShareScorer()
    loop = make_loop(Router([lane(scorer)], {}), batch_size=4, batch_timeout_s=0.2)
    run_loop(loop, [session(["a"]) for _ in range(10)], wait_for=10)
    assert scorer.batches[:2] == [4, 4] and sum(scorer.batches) == 10


def test_an_idle_scorer_takes_a_partial_batch_at_once() -> None:
    scorer = UnknownShareScorer()
    # A batch window far longer than the test: a loop that waited for the batch to fill would score
    # nothing until it is cancelled and drained.
    loop = make_loop(Router([lane(scorer)], {}), batch_size=100, batch_timeout_s=3600.0)

    async def main() -> list[int]:
        task = asyncio.create_task(loop.run())
        loop.submit([session(["a"])])

        async def scored() -> None:
            while not results:
                await asyncio.sleep(0.005)

        try:
            await asyncio.wait_for(scored(), 30)  # a bound for a broken loop, not a speed check
            return list(scorer.batches)
        finally:
            task.cancel()
            await loop.drain()

    assert asyncio.run(main()) == [1]  # scored while the loop was running, in a batch of one


def test_a_busy_scorer_lets_the_next_batch_fill_up() -> None:
    scorer = UnknownShareScorer(delay_s=0.2)  # the first batch keeps the scorer busy for 0.2 s

    async def main() -> None:
        loop = make_loop(Router([lane(scorer)], {}), batch_size=100, batch_timeout_s=0.1)
        task = asyncio.create_task(loop.run())
        loop.submit([session(["a"])])
        await asyncio.sleep(0.05)
        for _ in range(5):  # arrive while the first batch is scored: batched together
            loop.submit([session(["b"])])
            await asyncio.sleep(0.005)
        while len(results) < 6:
            await asyncio.sleep(0.01)
        task.cancel()
        await loop.drain()

    asyncio.run(main())
    assert scorer.batches == [1, 5]


def test_batches_are_split_by_lane() -> None:
    first, second = UnknownShareScorer(), UnknownShareScorer()
    loop = make_loop(Router([lane(first, 0), lane(second, 1, threshold=0.0)], {}), batch_size=8)
    run_loop(loop, [session(["a"], 0), session(["zzz"], 1), session(["b"], 0)], wait_for=3)
    assert first.batches == [2] and second.batches == [1]
    by_lane = {s.lane: v for s, v in results}
    assert by_lane[1].is_anomaly is True


def test_scorer_error_fails_open_with_a_one_line_reason() -> None:
    loop = make_loop(Router([lane(UnknownShareScorer(fail=True))], {}), batch_timeout_s=0.001)
    run_loop(loop, [session(["a"]), session(["b"])], wait_for=2)
    assert [v.status for _, v in results] == ["unscored", "unscored"]
    reason = results[0][1].reason
    assert reason == "scoring failed: ScoringError: backend exploded" and "\n" not in reason


def test_scorer_timeout_fails_open() -> None:
    scorer = UnknownShareScorer(delay_s=5.0)
    loop = make_loop(Router([lane(scorer)], {}), batch_timeout_s=0.001, timeout_s=0.05)
    run_loop(loop, [session(["a"])], wait_for=1)
    scorer.release.set()
    assert results[0][1].status == "unscored"
    assert results[0][1].reason == "scoring timed out after 0.05s"
    loop.close()


def test_learn_only_lane_is_unscored_without_calling_anything() -> None:
    loop = make_loop(Router([lane(None)], {}), batch_timeout_s=0.001)
    run_loop(loop, [session(["a"])], wait_for=1)
    assert results[0][1] == Verdict.unscored(LEARN_ONLY_REASON)


class RunningMean:
    """A minimal streaming threshold (the ``DynamicThreshold`` protocol): the mean of past scores."""

    def __init__(self) -> None:
        self.n, self.mean = 0, 0.0

    def update(self, score: float) -> tuple[float, bool]:
        threshold = self.mean if self.n else float("inf")
        self.n += 1
        self.mean += (score - self.mean) / self.n
        return threshold, score > threshold


def test_dynamic_threshold_keeps_one_state_per_service() -> None:
    policy = DynamicThresholdPolicy(RunningMean)
    assert policy.judge("a", 1.0) == (float("inf"), False)
    assert policy.judge("b", 5.0) == (float("inf"), False)  # b has its own state
    assert policy.judge("a", 3.0) == (1.0, True)
    assert policy.judge("a", 0.0) == (2.0, False)


def test_dynamic_threshold_caps_the_number_of_groups() -> None:
    policy = DynamicThresholdPolicy(RunningMean, max_groups=1)
    policy.judge("a", 1.0)
    assert policy.judge("b", 3.0) == (float("inf"), False)  # over the cap: opens the shared "" group
    assert policy.judge("c", 5.0) == (3.0, True)  # c shares it: it saw b's score
    assert policy.judge("a", 0.0) == (1.0, False)  # a keeps its own


def test_dtpm_policy_uses_the_bundle_parameters(tmp_path: Path) -> None:
    """``scoring.threshold: dtpm`` builds ``scoring.dtpm.DynamicThreshold`` from threshold.json."""
    threshold_module = pytest.importorskip("otel_logbert.scoring.dtpm")
    from otel_logbert.bundle import load_bundle, write_json
    from otel_logbert.config import config_from_dict
    from otel_logbert.errors import BundleError
    from otel_logbert.sidecar.wiring import _threshold
    from tests.conftest import make_rule_bundle

    path = make_rule_bundle(tmp_path / "b")
    config = config_from_dict({"scoring": {"bundle": str(path), "threshold": "dtpm"}}, environ={})
    with pytest.raises(BundleError, match="no 'dtpm' parameters"):
        _threshold(config, load_bundle(path))
    hidden = 16
    params = threshold_module.DTPMParams(0.5, [[0.0] * 6] * hidden, [0.0] * hidden, [[0.0] * hidden] * 2, [-30.0, 0.0])
    write_json(path / "threshold.json", {"threshold": 0.5, "dtpm": params.to_json()})
    policy = _threshold(config, load_bundle(path))
    # gate ~ 0: the dynamic threshold falls back to the static one
    threshold, is_anomaly = policy.judge("cart", 0.7)
    assert threshold == pytest.approx(0.5) and is_anomaly


def test_lane_scores_keep_session_order_and_evidence() -> None:
    scorer = UnknownShareScorer()
    sessions = [["a"] * 3, ["zzz"] * 100, ["a", "zzz"] * 2, ["b"] * 20]
    results = lane(scorer).score(sessions)
    assert scorer.batches == [4]  # one call: length batching is score_sessions' job (test_batching)
    assert [r.score for r in results] == [0.0, 1.0, 0.5, 0.0]
    assert results[2].unexpected == (False, True, False, True)


def test_the_threshold_policy_alone_decides() -> None:
    class Inverted(StaticThreshold):  # a policy whose decision is not ``score > threshold``
        def judge(self, group: str, score: float) -> tuple[float, bool]:
            return self.value, score < self.value

    inverted = lane(UnknownShareScorer())
    inverted.threshold = Inverted(0.4)
    loop = make_loop(Router([inverted], {}))
    run_loop(loop, [session(["a"]), session(["zzz"])], wait_for=2)
    assert [v.is_anomaly for _, v in results] == [True, False]
