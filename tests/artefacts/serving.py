"""One check shared by the installed-package and container tests: an ``otel-logbert serve`` process
(however it was installed) scores OTLP traffic with a real bundle and forwards it enriched."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conftest import OtlpSink, SidecarProcess, shop_flow
from tests.integration.test_sidecar_model import NEVER_SEEN, attributes, send


def sidecar_config(sink: OtlpSink, bundle: Path) -> dict:
    return {
        "forward": {"endpoint": sink.endpoint, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5}},
        "sessions": {"inactivity_timeout_s": 0.3},
        "scoring": {"bundle": str(bundle), "batch_timeout_ms": 5},
        "telemetry": {"log_format": "json"},
    }


def assert_scores_traffic(sidecar: SidecarProcess, sink: OtlpSink, bundle: Path) -> None:
    """Send four normal shop sessions and one with a never-seen line over OTLP/gRPC; every record
    comes back scored by the bundle's model, the odd line flagged as unexpected."""
    model_version = json.loads((bundle / "bundle.json").read_text())["model_version"]
    rng = random.Random(7)
    traces = {i: shop_flow(rng, i % 2) for i in range(1, 5)}
    odd = shop_flow(rng, 0)
    traces[99] = odd[:2] + [NEVER_SEEN] + odd[2:]
    sent = send(sidecar.grpc_target, traces)
    received = sink.wait_for_records(sent, timeout_s=30)
    assert len(received) == sent
    for _, _, record in received:
        a = attributes(record)
        assert a["log.anomaly.status"] == "scored", a
        assert (a["log.anomaly.model"], a["log.anomaly.model_version"]) == ("fastlogad", model_version)
        assert a["log.anomaly.unexpected"] is (record.body.string_value == NEVER_SEEN)
        if int.from_bytes(record.trace_id, "big") != 99:
            assert a["log.anomaly.is_anomaly"] is False  # flows like the training data
