"""The real ``otel-logbert serve`` process on localhost, driven by opentelemetry-sdk's OTLP log
exporters (gRPC and HTTP), forwarding to a real OTLP receiver (``conftest.OtlpSink``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from otel_logbert.otlp.retry import retry_info_delay
from tests.conftest import NORMAL_MESSAGES, OWNED, OtlpSink, SidecarProcess, free_port

pytestmark = pytest.mark.integration



def attributes(message: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in message.attributes}


def emit(exporter: Any, service: str, traces: list[tuple[int, int, list[str]]], tag: str) -> int:
    """Log ``messages`` in each ``(trace id, span id, messages)`` through the SDK and ``exporter``."""
    provider = LoggerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.checkout", "2.0")
    n = 0
    for trace_id, span_id, messages in traces:
        context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        for message in messages:
            logger.emit(body=message, context=context, severity_number=SeverityNumber.INFO, severity_text="INFO",
                        attributes={"test.id": f"{tag}-{n}", "test.count": n}, timestamp=1_700_000_000_000_000_000 + n)
            n += 1
    assert provider.force_flush(10_000)
    provider.shutdown()
    return n


def config(sink: OtlpSink, bundle: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "forward": {"endpoint": sink.endpoint, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5}},
        "sessions": {"inactivity_timeout_s": 0.3},
        "scoring": {"bundle": str(bundle), "batch_timeout_ms": 5},
        "telemetry": {"log_format": "json"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def test_sdk_exporters_over_grpc_and_http_records_arrive_once_enriched_with_span_events(
    otlp_sink: OtlpSink, rule_bundle: Path, sidecar_process: Any
) -> None:
    sidecar: SidecarProcess = sidecar_process(config(otlp_sink, rule_bundle))
    normal = list(NORMAL_MESSAGES[:3])
    faulty = [NORMAL_MESSAGES[3], "segfault in worker process"]
    grpc_traces = [(0xA1 << 64 | i, 0x100 + i, normal) for i in range(1, 4)] + [(0xBAD1, 0x77, faulty)]
    http_traces = [(0xC1 << 64 | i, 0x200 + i, normal) for i in range(1, 3)] + [(0xBAD2, 0x88, faulty)]
    sent = emit(GrpcLogExporter(endpoint=sidecar.grpc_target, insecure=True), "cart", grpc_traces, "grpc")
    sent += emit(HttpLogExporter(endpoint=f"{sidecar.http_url}/v1/logs"), "payments", http_traces, "http")

    received = otlp_sink.wait_for_records(sent)

    for resource, scope, record in received:
        a = attributes(record)
        res = attributes(resource)
        assert res["service.name"] in ("cart", "payments") and res["deployment.environment"] == "test"
        assert res["telemetry.sdk.language"] == "python"
        assert (scope.name, scope.version) == ("shop.checkout", "2.0")
        assert record.severity_text == "INFO" and record.severity_number == SeverityNumber.INFO.value
        assert record.time_unix_nano == 1_700_000_000_000_000_000 + a["test.count"]
        assert record.flags & 0xFF == TraceFlags.SAMPLED
        assert {k for k in a if not k.startswith(OWNED)} == {"test.id", "test.count"}
        assert a["log.anomaly.status"] == "scored" and a["log.anomaly.model"] == "fastlogad"
        trace_id = int.from_bytes(record.trace_id, "big")
        faulty_trace = trace_id in (0xBAD1, 0xBAD2)
        assert a["log.anomaly.is_anomaly"] is faulty_trace
        assert a["log.anomaly.session.id"].startswith(record.trace_id.hex())
        assert a["log.anomaly.unexpected"] is (record.body.string_value == faulty[1])

    spans = otlp_sink.wait_for_spans(len(grpc_traces) + len(http_traces))
    by_trace = {int.from_bytes(span.trace_id, "big"): span for _, span in spans}
    for trace_id, span_id, messages in grpc_traces + http_traces:
        span = by_trace[trace_id]
        assert span.name == "log.anomaly.session"
        assert int.from_bytes(span.parent_span_id, "big") == span_id
        event = span.events[0]
        event_attrs = attributes(event)
        assert event.name == "log.anomaly"
        assert event_attrs["log.anomaly.is_anomaly"] is (messages is faulty)
        if messages is faulty:
            assert [v.string_value for v in event_attrs["log.anomaly.unexpected_templates"].values] == [faulty[1]]
    assert sidecar.metric("otel_logbert_records_forwarded_total") == sent
    assert sidecar.metric("otel_logbert_sessions_scored_total") == len(grpc_traces) + len(http_traces)
    # one close -> verdict latency per scored session, the part of close -> forwarded before annotation
    assert sidecar.metric("otel_logbert_session_verdict_latency_seconds_count") == len(grpc_traces) + len(http_traces)
    # A graceful stop delivers (and has acknowledged) everything the sidecar holds before it exits, so
    # after it nothing more can arrive: every record exactly once, no late duplicate.
    assert sidecar.stop() == 0
    ids = [attributes(r)["test.id"] for _, _, r in otlp_sink.records()]
    assert len(ids) == sent == len(set(ids))


def raw_grpc(target: str, body: bytes) -> tuple[grpc.StatusCode, str, Any]:
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), exc.trailing_metadata()
    return grpc.StatusCode.OK, "", None


def http_post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}/v1/logs", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def request(bodies: list[Any], trace_id: bytes = b"") -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "edge"
    sl = rl.scope_logs.add()
    for body in bodies:
        record = sl.log_records.add(trace_id=trace_id)
        if isinstance(body, str):
            record.body.string_value = body
        elif body is not None:
            record.body.CopyFrom(body)
    return req


def test_bad_input_gets_clear_statuses_and_odd_records_pass_through(
    otlp_sink: OtlpSink, rule_bundle: Path, sidecar_process: Any
) -> None:
    from opentelemetry.proto.common.v1 import common_pb2

    sidecar: SidecarProcess = sidecar_process(config(otlp_sink, rule_bundle, receivers={
        "grpc": {"max_message_bytes": 4096}, "http": {"max_body_bytes": 4096}}))
    target = sidecar.grpc_target

    code, details, _ = raw_grpc(target, b"\x0a\xff\xff\xff\xff\x0f")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed protobuf" in details
    code, _, _ = raw_grpc(target, request(["x" * 5000]).SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert http_post(sidecar.http_url, b"{nope", "application/json")[0] == 400
    assert http_post(sidecar.http_url, b"hello", "text/plain")[0] == 415
    assert http_post(sidecar.http_url, request(["x" * 5000]).SerializeToString(), "application/x-protobuf")[0] == 413

    kvlist = common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key="event", value=common_pb2.AnyValue(string_value="login"))]))
    odd = request([kvlist, common_pb2.AnyValue(bytes_value=b"\x00\xff"), None, "no trace id"])
    assert raw_grpc(target, odd.SerializeToString())[0] == grpc.StatusCode.OK
    invalid = request(["bad XXXX utf8"], trace_id=b"\x42" * 16).SerializeToString()
    invalid = invalid.replace(b"XXXX", b"\xc3\x28\xff\xfe")
    assert raw_grpc(target, invalid)[0] == grpc.StatusCode.OK
    received = otlp_sink.wait_for_records(4)
    statuses = sorted(attributes(r)["log.anomaly.status"] for _, _, r in received)
    assert statuses == ["unsessioned"] * 4
    deadline = time.monotonic() + 10
    while not otlp_sink.invalid_utf8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert otlp_sink.invalid_utf8 and b"bad \xc3\x28\xff\xfe utf8" in otlp_sink.invalid_utf8[0]
    code, body = sidecar.get("/readyz")
    assert code == 200 and json.loads(body)["status"] == "ready"  # still alive and well
    assert sidecar.stop() == 0


def test_unknown_bundle_exits_2_with_one_line(otlp_sink: OtlpSink, tmp_path: Path) -> None:
    process = SidecarProcess(config(otlp_sink, tmp_path / "no-such-bundle"), tmp_path).spawn()
    assert process.wait() == 2
    lines = process.stderr().strip().splitlines()
    assert lines == [f"otel-logbert serve: error: {tmp_path / 'no-such-bundle'}: bundle directory not found"]


def test_bad_config_exits_2_with_one_line(otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path) -> None:
    process = SidecarProcess(config(otlp_sink, rule_bundle, sessions={"key": "span"}), tmp_path).spawn()
    assert process.wait() == 2
    (line,) = process.stderr().strip().splitlines()
    assert "sessions.key: 'span' is not one of trace_id, attributes, regex, window" in line


def test_sigterm_flushes_open_sessions(otlp_sink: OtlpSink, rule_bundle: Path, sidecar_process: Any) -> None:
    sidecar: SidecarProcess = sidecar_process(config(
        otlp_sink, rule_bundle, sessions={"inactivity_timeout_s": 300, "max_age_s": 3000}))
    req = request(list(NORMAL_MESSAGES), trace_id=b"\x07" * 16)
    assert raw_grpc(sidecar.grpc_target, req.SerializeToString())[0] == grpc.StatusCode.OK
    time.sleep(0.3)
    assert otlp_sink.records() == []  # held in an open session
    assert sidecar.stop() == 0
    received = otlp_sink.records()
    assert len(received) == len(NORMAL_MESSAGES)
    assert {attributes(r)["log.anomaly.status"] for _, _, r in received} == {"scored"}
    assert '"message": "otel-logbert sidecar stopped"' in sidecar.stderr()


def test_downstream_down_pushes_back_then_recovers_without_loss(rule_bundle: Path, sidecar_process: Any) -> None:
    """Like a Collector's sending queue: retry refused requests after the hinted delay."""
    sink = OtlpSink(free_port())  # down at first
    sidecar: SidecarProcess = sidecar_process(config(sink, rule_bundle, forward={
        "queue_max_records": 20, "timeout_s": 1}))
    batches = [request([f"record {b}-{i}" for i in range(10)]).SerializeToString() for b in range(6)]
    refused = 0
    try:
        pending = list(batches)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            code, _, trailer = raw_grpc(sidecar.grpc_target, pending[0])
            if code == grpc.StatusCode.OK:
                pending.pop(0)
                continue
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            refused += 1
            if refused == 1:
                assert sidecar.metric("otel_logbert_queue_fill") >= 1.0
                sink.start()  # the downstream comes back
            time.sleep(min(retry_info_delay(trailer) or 1.0, 0.2))
        assert not pending
        received = sink.wait_for_records(60)
        time.sleep(0.3)
        bodies = [r.body.string_value for _, _, r in sink.records()]
    finally:
        sink.stop()
    assert refused >= 1
    assert sorted(bodies) == sorted(f"record {b}-{i}" for b in range(6) for i in range(10))
    assert len(received) == 60
    assert sidecar.metric("otel_logbert_requests_refused_total", reason="backpressure") == refused


def test_failing_model_records_go_on_unscored(otlp_sink: OtlpSink, broken_bundle: Path, sidecar_process: Any) -> None:
    sidecar: SidecarProcess = sidecar_process(config(otlp_sink, broken_bundle))
    assert raw_grpc(sidecar.grpc_target, request(["a", "b"], trace_id=b"\x09" * 16).SerializeToString())[0] == (
        grpc.StatusCode.OK)
    received = otlp_sink.wait_for_records(2)
    reasons = {attributes(r)["log.anomaly.reason"] for _, _, r in received}
    assert len(reasons) == 1 and reasons.pop().startswith("scoring failed: ScoringError")
    assert {attributes(r)["log.anomaly.status"] for _, _, r in received} == {"unscored"}
    assert sidecar.metric("otel_logbert_sessions_unscored_total", outcome="error") == 1


def test_learn_command_records_sessions_for_training(otlp_sink: OtlpSink, tmp_path: Path,
                                                     sidecar_process: Any) -> None:
    output = tmp_path / "learned.txt"
    cfg = config(otlp_sink, tmp_path, scoring={"bundle": None})
    sidecar: SidecarProcess = sidecar_process(cfg, command="learn", extra_args=("--output", str(output)))
    for i in range(3):
        req = request(list(NORMAL_MESSAGES[:3]), trace_id=bytes([i + 1]) * 16)
        assert raw_grpc(sidecar.grpc_target, req.SerializeToString())[0] == grpc.StatusCode.OK
    otlp_sink.wait_for_records(9)
    assert sidecar.stop() == 0
    lines = output.read_text().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1 and len(lines[0].split()) == 3
    state = json.loads((tmp_path / "learned.drain3.json").read_text())
    assert {str(c["id"]) for c in state["clusters"]} >= set(lines[0].split())
