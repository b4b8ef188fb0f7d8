"""TritonScorer without a server: the circuit breaker, request planning, and failing fast against a
closed port (a real gRPC connection attempt, nothing mocked). The server tests live in
``tests/integration/triton_serving``."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from otel_logbert.bundle import load_bundle
from otel_logbert.scoring.base import ScoringError
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.scoring.triton import CircuitBreaker, CircuitOpenError, TritonScorer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_the_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=5, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure("UNAVAILABLE")
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure("UNAVAILABLE")
    assert breaker.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpenError, match="3 consecutive failures .*UNAVAILABLE.*next probe in 5.0s"):
        breaker.before_call()
    clock.now += 5
    assert breaker.state == CircuitBreaker.HALF_OPEN
    breaker.before_call()  # the probe goes out
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure("still down")  # a failed probe opens it again for a full cool-down
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 0.1
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.before_call()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_triton_fails_fast_then_the_breaker_opens(rule_bundle: Path) -> None:
    bundle = load_bundle(rule_bundle)
    scorer = TritonScorer(bundle, url=f"127.0.0.1:{closed_port()}", timeout_s=0.5, failure_threshold=2)
    assert scorer.deadline_s == 1.0
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(ScoringError, match="UNAVAILABLE") as caught:
            scorer.score([[4, 5]])
        assert not isinstance(caught.value, CircuitOpenError)
        assert time.monotonic() - started <= scorer.deadline_s + 0.3
    with pytest.raises(CircuitOpenError):
        scorer.score([[4, 5]])
    status = scorer.status()
    assert not status.ok and "unreachable" in status.reason
    assert scorer.ready() is False
    assert scorer.score([]) == []  # nothing to score needs no server
    scorer.close()
    scorer.close()


def test_same_interface_as_the_embedded_scorer(rule_bundle: Path) -> None:
    bundle = load_bundle(rule_bundle)
    scorer = TritonScorer(bundle, url="127.0.0.1:1")
    embedded = OnnxScorer(bundle)
    assert (scorer.model_name, scorer.model_version, scorer.max_len) == (
        embedded.model_name, embedded.model_version, embedded.max_len
    )


def test_missing_triton_client_says_which_extra_to_install(rule_bundle: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_logbert.config import config_from_dict
    from otel_logbert.errors import UserError
    from otel_logbert.sidecar.wiring import build_router

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if the client were not installed
    config = config_from_dict({"forward": {"endpoint": "127.0.0.1:4317"},
                               "scoring": {"bundle": str(rule_bundle), "scorer": "triton"}}, environ={})
    with pytest.raises(UserError, match=r"pip install 'otel-logbert\[triton\]'"):
        build_router(config)
