"""The DTPM dynamic threshold: fitted on normal scores only, follows drift, ignores anomaly bursts."""

from __future__ import annotations

import numpy as np
import pytest

from otel_logbert.scoring.dtpm import DTPMParams, DynamicThreshold, fit_dtpm


@pytest.fixture(scope="module")
def params() -> DTPMParams:
    normal = np.random.default_rng(0).gamma(2.0, 0.1, size=600)
    return fit_dtpm(normal, float(np.quantile(normal, 0.999)), tau=0.99, epochs=150)


def test_json_round_trip(params):
    again = DTPMParams.from_json(params.to_json())
    a, b = DynamicThreshold(params), DynamicThreshold(again)
    for s in [0.1, 0.3, 0.2, 5.0]:
        assert a.update(s) == b.update(s)


def test_normal_stream_rarely_flagged(params):
    policy = DynamicThreshold(params)
    stream = np.random.default_rng(1).gamma(2.0, 0.1, size=2000)
    flagged = sum(policy.update(float(s))[1] for s in stream)
    assert flagged / len(stream) < 0.05


def test_anomaly_burst_does_not_raise_threshold(params):
    policy = DynamicThreshold(params)
    before = policy.current()
    for _ in range(200):
        threshold, is_anomaly = policy.update(50.0)
        assert is_anomaly
    assert policy.current() == pytest.approx(before)


def test_clear_anomaly_flagged_after_normal_traffic(params):
    policy = DynamicThreshold(params)
    for s in np.random.default_rng(2).gamma(2.0, 0.1, size=300):
        policy.update(float(s))
    assert policy.update(10.0)[1]
