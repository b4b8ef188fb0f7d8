"""otlp.receiver: OTLP/gRPC and OTLP/HTTP answers for good, bad and too-much input, in-process."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from otel_logbert.otlp.retry import retry_info_delay
from tests.conftest import OtlpSink, free_port, prometheus_value, running_sidecar, sidecar_config


def request(n: int = 1, body: str = "hello world", trace_id: bytes = b"") -> bytes:
    req = logs_service_pb2.ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(n):
        sl.log_records.add(body={"string_value": f"{body} {i}"}, trace_id=trace_id)
    return req.SerializeToString()


async def grpc_export(sidecar: Any, body: bytes) -> tuple[grpc.StatusCode, str, Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports['grpc']}") as channel:
        try:
            await channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", exc.trailing_metadata()
    return grpc.StatusCode.OK, "", None


async def http_post(sidecar: Any, body: bytes, content_type: str, **headers: str) -> tuple[int, bytes, Any]:
    url = f"http://127.0.0.1:{sidecar.ports['http']}/v1/logs"
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers={"Content-Type": content_type, **headers}
    ) as response:
        return response.status, await response.read(), response.headers


def run(config: dict[str, Any], scenario: Any) -> Any:
    async def main() -> Any:
        async with running_sidecar(config) as sidecar:
            return await scenario(sidecar)

    return asyncio.run(main())


def test_http_protobuf_and_json_succeed_with_responses_in_kind(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    json_body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "from json"}, "traceId": "0af7651916cd43dd8448eb211c80319c",
         "spanId": "b7ad6b7169203331"}]}]}]}).encode()

    async def scenario(sidecar: Any) -> tuple[Any, Any, Any]:
        pb = await http_post(sidecar, request(2), "application/x-protobuf")
        js = await http_post(sidecar, json_body, "application/json")
        gz = await http_post(sidecar, gzip.compress(request(1, "zipped")), "application/x-protobuf",
                             **{"Content-Encoding": "gzip"})
        await asyncio.to_thread(otlp_sink.wait_for_records, 4)
        return pb, js, gz

    pb, js, gz = run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)
    assert pb[0] == 200 and pb[2]["Content-Type"] == "application/x-protobuf"
    assert logs_service_pb2.ExportLogsServiceResponse.FromString(pb[1]) == logs_service_pb2.ExportLogsServiceResponse()
    assert js[0] == 200 and js[2]["Content-Type"] == "application/json" and json.loads(js[1]) == {}
    assert gz[0] == 200
    bodies = sorted(r.body.string_value for _, _, r in otlp_sink.records())
    assert bodies == ["from json", "hello world 0", "hello world 1", "zipped 0"]
    (from_json,) = [r for _, _, r in otlp_sink.records() if r.body.string_value == "from json"]
    assert from_json.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"


def test_http_bad_input_statuses(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0", "max_body_bytes": 1000}})

    async def scenario(sidecar: Any) -> dict[str, tuple[int, bytes, Any]]:
        return {
            "media": await http_post(sidecar, b"hello", "text/plain"),
            "protobuf": await http_post(sidecar, b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf"),
            "json": await http_post(sidecar, b"{oops", "application/json"),
            "large": await http_post(sidecar, request(100), "application/x-protobuf"),
            "large_gzip": await http_post(sidecar, gzip.compress(b"\x00" * 5000), "application/x-protobuf",
                                          **{"Content-Encoding": "gzip"}),
        }

    answers = run(config, scenario)
    assert answers["media"][0] == 415
    assert answers["protobuf"][0] == 400
    status = status_pb2.Status.FromString(answers["protobuf"][1])
    assert status.code == 3 and "malformed protobuf" in status.message and "\n" not in status.message
    assert answers["json"][0] == 400 and json.loads(answers["json"][1])["message"].startswith("malformed JSON")
    assert answers["large"][0] == 413
    assert answers["large_gzip"][0] == 413  # the limit applies after decompression
    assert otlp_sink.records() == []


def test_grpc_bad_input_codes(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0", "max_message_bytes": 1000}, "http": {"endpoint": None}})

    async def scenario(sidecar: Any) -> tuple[Any, Any, Any]:
        return (await grpc_export(sidecar, b"\x0a\xff\xff\xff\xff\x0f"), await grpc_export(sidecar, request(100)),
                await grpc_export(sidecar, b""))

    malformed, large, empty = run(config, scenario)
    assert malformed[0] == grpc.StatusCode.INVALID_ARGUMENT and "malformed protobuf" in malformed[1]
    assert large[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert empty[0] == grpc.StatusCode.OK  # an empty request is a valid, empty export


def test_full_queue_pushes_back_then_recovers_without_loss(rule_bundle: Path) -> None:
    """Downstream down: the forward queue fills, both receivers push back with retry hints; when the
    downstream comes back every accepted record arrives exactly once and requests are accepted again."""
    sink = OtlpSink(free_port())  # not started yet: nothing listens on its port
    config = sidecar_config(sink.endpoint, rule_bundle, forward={
        "endpoint": sink.endpoint, "queue_max_records": 5, "timeout_s": 1,
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.1}})

    async def scenario(sidecar: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"first": await grpc_export(sidecar, request(5, "a"))}
        out["grpc_full"] = await grpc_export(sidecar, request(1, "b"))
        out["http_full"] = await http_post(sidecar, request(1, "c"), "application/x-protobuf")
        sink.start()
        await asyncio.to_thread(sink.wait_for_records, 5)
        out["after"] = await grpc_export(sidecar, request(1, "d"))
        await asyncio.to_thread(sink.wait_for_records, 6)
        return out

    try:
        out = run(config, scenario)
    finally:
        sink.stop()
    assert out["first"][0] == grpc.StatusCode.OK
    code, details, trailer = out["grpc_full"]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in details
    assert retry_info_delay(trailer) == 1.0  # RetryInfo makes RESOURCE_EXHAUSTED retryable for clients
    status, _, headers = out["http_full"]
    assert status == 503 and headers["Retry-After"] == "1"
    assert out["after"][0] == grpc.StatusCode.OK
    bodies = sorted(r.body.string_value for _, _, r in sink.records())
    assert bodies == ["a 0", "a 1", "a 2", "a 3", "a 4", "d 0"]  # exactly once, refused ones not taken


def test_shutting_down_answers_unavailable(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    async def main() -> Any:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            sidecar.pipeline.accepting = False  # what stop() sets before closing the receivers
            try:
                from otel_logbert.otlp.receiver import Refused

                with pytest.raises(Refused) as info:
                    await sidecar.pipeline.accept(logs_service_pb2.ExportLogsServiceRequest(), "grpc")
                return info.value
            finally:
                sidecar.pipeline.accepting = True

    refused = asyncio.run(main())
    assert refused.reason == "shutting_down"


def test_readyz_healthz_and_metrics(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    async def scenario(sidecar: Any) -> dict[str, tuple[int, str]]:
        await grpc_export(sidecar, request(3))
        await asyncio.to_thread(otlp_sink.wait_for_records, 3)
        # the sink has the records before the forwarder has handled the reply (and counted them)
        for _ in range(500):
            if not sidecar.pipeline.forwarder.pending_records:
                break
            await asyncio.sleep(0.01)
        port = sidecar.telemetry.port
        out = {}
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    out[path] = (response.status, await response.text())
        return out

    out = run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)
    assert out["/healthz"][0] == 200 and out["/readyz"] == (200, '{"status": "ready", "reason": ""}')
    metrics = out["/metrics"][1]
    assert prometheus_value(metrics, "otel_logbert_records_received_total", protocol="grpc") == 3
    assert prometheus_value(metrics, "otel_logbert_records_forwarded_total") == 3
    assert prometheus_value(metrics, "otel_logbert_records_unsessioned_total") == 3
    assert prometheus_value(metrics, "otel_logbert_session_forward_latency_seconds_count") >= 1
    assert "otel_logbert_queue_fill{" in metrics and "otel_logbert_sessions_open{" in metrics


def test_unbindable_port_is_a_user_error(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    from otel_logbert.errors import UserError

    blocker = OtlpSink(free_port()).start()
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": f"127.0.0.1:{blocker.port}"}, "http": {"endpoint": None}})

    async def main() -> None:
        async with running_sidecar(config):
            pass

    try:
        with pytest.raises(UserError, match=r"receivers\.grpc\.endpoint 127\.0\.0\.1:\d+: cannot listen"):
            asyncio.run(main())
    finally:
        blocker.stop()




def test_a_large_request_is_taken_in_slices_exactly_once(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    from otel_logbert.sidecar.lanes import YIELD_EVERY

    n = 3 * YIELD_EVERY + 17
    req = logs_service_pb2.ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(n):  # every third record has one of 10 trace ids, the others none
        trace_id = bytes([1 + i % 10]) * 16 if i % 3 == 0 else b""
        sl.log_records.add(body={"string_value": f"event {i}"}, trace_id=trace_id)

    async def scenario(sidecar: Any) -> Any:
        result = await grpc_export(sidecar, req.SerializeToString())
        await asyncio.to_thread(otlp_sink.wait_for_records, n)
        return result

    assert run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)[0] == grpc.StatusCode.OK
    bodies = sorted(r.body.string_value for _, _, r in otlp_sink.records())
    assert bodies == sorted(f"event {i}" for i in range(n))
