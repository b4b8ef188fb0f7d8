"""The real sidecar (``otel-logbert serve`` in a subprocess) scoring through a real tritonserver.

Triton is killed while records stream in and started again: every record still reaches the
downstream receiver, ``unscored`` (with the reason) while Triton is down and ``scored`` again once
it is back, without restarting the sidecar. Fixtures ``sidecar_process``, ``otlp_sink`` and
``rule_bundle`` come from ``tests/conftest.py``; the Triton ones from this directory's conftest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

pytestmark = pytest.mark.integration

MESSAGES = ("user {n} logged in from 10.1.2.3", "order {n} created for user 42", "payment accepted for order {n}")


def session_request(n: int) -> logs_service_pb2.ExportLogsServiceRequest:
    """One session (trace id from ``n``) of three records whose bodies name ``n``."""
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "cart"
    sl = rl.scope_logs.add()
    trace_id = n.to_bytes(16, "big")
    for message in MESSAGES:
        sl.log_records.append(logs_pb2.LogRecord(
            body=common_pb2.AnyValue(string_value=message.format(n=n)), trace_id=trace_id,
            span_id=b"\x01" * 8,
        ))
    return req


def verdicts(sink: Any) -> dict[tuple[bytes, str], dict[str, Any]]:
    """(trace id, body) -> the record's attributes, for every record the downstream received."""
    out = {}
    for _, _, record in sink.records():
        key = (record.trace_id, record.body.string_value)
        assert key not in out, f"record delivered twice: {key}"
        out[key] = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}
    return out


def wait_for(sink: Any, count: int, timeout_s: float = 20.0) -> dict[tuple[bytes, str], dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        received = verdicts(sink)
        if len(received) >= count:
            return received
        time.sleep(0.05)
    raise AssertionError(f"downstream has {len(verdicts(sink))} records, expected {count}")


def status_of(received: dict[tuple[bytes, str], dict[str, Any]], n: int) -> set[str]:
    trace_id = n.to_bytes(16, "big")
    return {a["log.anomaly.status"] for (t, _), a in received.items() if t == trace_id}


def test_records_keep_flowing_while_triton_is_down_and_are_scored_again_after(
    start_triton: Any, triton_repository: Path, rule_bundle: Path, otlp_sink: Any, sidecar_process: Any
) -> None:
    from otel_logbert.bundle import load_bundle
    from otel_logbert.triton.repository import default_model_name

    triton = start_triton(triton_repository)
    sidecar = sidecar_process({
        "forward": {"endpoint": otlp_sink.endpoint, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2}},
        "sessions": {"inactivity_timeout_s": 0.2},
        "scoring": {
            "bundle": str(rule_bundle), "scorer": "triton", "batch_timeout_ms": 5, "timeout_s": 2,
            "triton": {"url": triton.grpc_url, "model_name": None, "timeout_s": 0.5},
            # every session here repeats one key sequence: with the verdict cache on, the outage
            # would be answered from the cache (scored), and this test is about failing open
            "cache_entries": 0,
        },
        "telemetry": {"log_format": "text"},
    })
    channel = grpc.insecure_channel(sidecar.grpc_target)
    export = logs_service_pb2_grpc.LogsServiceStub(channel).Export
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        export(session_request(n), timeout=10)
        sent += len(MESSAGES)

    # 1. Triton up: scored by the model Triton serves under the bundle's default name.
    assert default_model_name(load_bundle(rule_bundle)) in (p.name for p in triton_repository.iterdir())
    for n in range(1, 6):
        send(n)
    received = wait_for(otlp_sink, sent)
    assert {a["log.anomaly.status"] for a in received.values()} == {"scored"}

    # 2. Triton killed mid-stream: records still arrive, unscored, with the reason.
    triton.kill()
    for n in range(6, 16):
        send(n)
        time.sleep(0.05)
    received = wait_for(otlp_sink, sent)
    down = [a for (t, _), a in received.items() if 6 <= int.from_bytes(t, "big") < 16]
    assert len(down) == 10 * len(MESSAGES)
    assert {a["log.anomaly.status"] for a in down} == {"unscored"}
    assert all("Triton" in a["log.anomaly.reason"] for a in down)

    # 3. Triton back on the same port: scoring resumes by itself (breaker probe), nothing lost.
    triton.start()
    n, resumed = 16, None
    deadline = time.monotonic() + 30
    while resumed is None and time.monotonic() < deadline:
        send(n)
        received = wait_for(otlp_sink, sent)
        if status_of(received, n) == {"scored"}:
            resumed = n
        n += 1
        time.sleep(0.2)
    assert resumed is not None, "sidecar did not score again after Triton came back"
    received = wait_for(otlp_sink, sent)
    assert len(received) == sent  # every record sent reached the downstream exactly once
    channel.close()
    assert sidecar.stop() == 0
