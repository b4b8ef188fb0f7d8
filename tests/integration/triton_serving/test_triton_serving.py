"""TritonScorer against a real tritonserver (python backend, generated repository, real HDFS model).

Nothing is mocked: the server is the nvidia-pytriton wheel's tritonserver on loopback ports, the
model is FastLogAD trained in the fixture on real HDFS sessions, the sessions are real dev sessions.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otel_logbert.bundle import load_bundle
from otel_logbert.scoring.base import ScoringError, SessionScore
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.scoring.triton import CircuitBreaker, CircuitOpenError, TritonScorer
from otel_logbert.triton.repository import default_model_name, write_triton_repository

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4


def assert_same(expected: list[SessionScore], got: list[SessionScore]) -> None:
    assert len(got) == len(expected)
    scores = np.array([s.score for s in got])
    reference = np.array([s.score for s in expected])
    np.testing.assert_allclose(scores, reference, atol=TOLERANCE, rtol=0)
    assert [s.unexpected for s in got] == [s.unexpected for s in expected]


def test_triton_scores_equal_the_embedded_scorer_on_real_hdfs_sessions(
    triton_server: Any, hdfs_bundle: Path, hdfs_dev_sessions: list[list[int]]
) -> None:
    bundle = load_bundle(hdfs_bundle)
    embedded = OnnxScorer(bundle).score(hdfs_dev_sessions)
    scorer = TritonScorer(bundle, url=triton_server.grpc_url, batch_size=64)
    try:
        assert scorer.status().ok
        got = scorer.score(hdfs_dev_sessions)
    finally:
        scorer.close()
    assert_same(embedded, got)
    longest = max(range(len(hdfs_dev_sessions)), key=lambda i: len(hdfs_dev_sessions[i]))
    assert len(got[longest].unexpected or ()) == len(hdfs_dev_sessions[longest]) > bundle.max_len
    # the model separates something: not every session gets the same score
    assert len({round(s.score, 4) for s in got}) > 10


def test_concurrent_callers_score_the_same_and_dynamic_batching_merges_requests(
    triton_server: Any, hdfs_bundle: Path, hdfs_dev_sessions: list[list[int]]
) -> None:
    import tritonclient.grpc as grpcclient

    bundle = load_bundle(hdfs_bundle)
    embedded = OnnxScorer(bundle).score(hdfs_dev_sessions)
    scorer = TritonScorer(bundle, url=triton_server.grpc_url, batch_size=4)
    stats = grpcclient.InferenceServerClient(triton_server.grpc_url)
    name = default_model_name(bundle)

    def counts() -> tuple[int, int]:
        model = stats.get_inference_statistics(name, as_json=True)["model_stats"][0]
        return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

    before = counts()
    # 4 threads share the scorer (as the sidecar's scoring workers do), each call split into requests
    # of 4 padded chunks; the requests of the same padded length are in flight together
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: scorer.score(hdfs_dev_sessions), range(4)))
    scorer.close()
    inferences, executions = (a - b for a, b in zip(counts(), before, strict=True))
    for got in results:
        assert_same(embedded, got)
    # requests of the same padded length were merged: fewer model executions than requests' rows
    assert inferences >= 4 * len(hdfs_dev_sessions)
    assert executions * 4 < inferences


def test_triton_killed_mid_stream_fails_fast_then_recovers_by_itself(
    start_triton: Any, triton_repository: Path, hdfs_bundle: Path, hdfs_dev_sessions: list[list[int]]
) -> None:
    server = start_triton(triton_repository)
    bundle = load_bundle(hdfs_bundle)
    sample = hdfs_dev_sessions[:40]
    scorer = TritonScorer(bundle, url=server.grpc_url, timeout_s=0.5, failure_threshold=2, reset_timeout_s=0.3)
    expected = scorer.score(sample)

    server.kill()
    errors: list[ScoringError] = []
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(ScoringError) as caught:
            scorer.score(sample)
        assert time.monotonic() - started < scorer.deadline_s + 0.5  # never hangs past the deadline
        errors.append(caught.value)
    assert "UNAVAILABLE" in str(errors[0])
    assert any(isinstance(e, CircuitOpenError) for e in errors)  # the breaker opened
    assert scorer.breaker.state in (CircuitBreaker.OPEN, CircuitBreaker.HALF_OPEN)
    assert not scorer.status().ok

    server.start()  # same ports
    recovered = None
    deadline = time.monotonic() + 30
    while recovered is None and time.monotonic() < deadline:
        try:
            recovered = scorer.score(sample)
        except ScoringError:
            time.sleep(0.1)
    assert recovered is not None, "scoring did not resume after Triton came back"
    assert scorer.breaker.state == CircuitBreaker.CLOSED
    assert_same(expected, recovered)
    scorer.close()


def test_unknown_model_gives_a_clear_status_and_error(triton_server: Any, hdfs_bundle: Path) -> None:
    bundle = load_bundle(hdfs_bundle)
    scorer = TritonScorer(bundle, url=triton_server.grpc_url, triton_model_name="no-such-model")
    status = scorer.status()
    assert status.server_ready and not status.model_ready
    assert "'no-such-model' is unknown" in status.reason
    assert default_model_name(bundle) in status.reason  # says what it does serve
    with pytest.raises(ScoringError, match="no-such-model"):
        scorer.score([[4, 5, 6]])
    scorer.close()


def test_model_that_failed_to_load_is_not_ready_with_the_reason(
    start_triton: Any, hdfs_bundle: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    model_dir = write_triton_repository(hdfs_bundle, repo, "python")
    (model_dir / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    server = start_triton(repo, "--exit-on-error=false", "--strict-readiness=false")
    scorer = TritonScorer(load_bundle(hdfs_bundle), url=server.grpc_url)
    status = scorer.status()
    assert status.server_ready and not status.model_ready
    assert "is not ready" in status.reason and "UNAVAILABLE" in status.reason
    with pytest.raises(ScoringError):
        scorer.score([[4, 5, 6]])
    scorer.close()


def test_a_model_from_another_bundle_is_refused(triton_server: Any, hdfs_bundle: Path, rule_bundle: Path) -> None:
    other = default_model_name(load_bundle(rule_bundle))
    scorer = TritonScorer(load_bundle(hdfs_bundle), url=triton_server.grpc_url, triton_model_name=other)
    with pytest.raises(ScoringError, match="serves bundle rule-1"):
        scorer.score([[4, 5, 6]])
    scorer.close()


def test_ready_follows_the_server(start_triton: Any, triton_repository: Path, hdfs_bundle: Path,
                                  tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(triton_repository, repo)
    server = start_triton(repo)
    scorer = TritonScorer(load_bundle(hdfs_bundle), url=server.grpc_url)
    assert _eventually(scorer.ready, True)
    server.kill()
    assert _eventually(scorer.ready, False)
    server.start()
    assert _eventually(scorer.ready, True)
    scorer.close()


def _eventually(probe: Any, value: bool, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe() is value:
            return True
        time.sleep(0.05)
    return False
