"""otlp.forwarder and otlp.retry: OTLP retry rules, throttling hints, drops, partial success."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.config import ForwardConfig, RetryConfig
from otel_logbert.otlp.codec import LOGS_SERVICE
from otel_logbert.otlp.forwarder import (
    Forwarder,
    GrpcLogsExporter,
    HttpLogsExporter,
    Item,
    LogsExporter,
    Mark,
)
from otel_logbert.otlp.receiver import Refused
from otel_logbert.otlp.retry import Backoff, parse_retry_after, retry_info_delay, retry_info_trailer
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.sessions.session import Origin
from otel_logbert.sidecar.pipeline import Admission
from tests.conftest import OtlpSink, prometheus_value

ORIGIN = Origin(None, b"", None, b"", "")
FAST = RetryConfig(initial_backoff_s=0.01, max_backoff_s=0.05)


def items(n: int) -> list[Item]:
    mark = Mark(time.monotonic())
    return [(ORIGIN, logs_pb2.LogRecord(body={"string_value": f"r{i}"}).SerializeToString(), b"", mark, 0)
            for i in range(n)]


class Outcomes:
    """A real ``Metrics`` for a forwarder, read back by outcome from its Prometheus exposition."""

    SAMPLES = {
        "ok": ("otel_logbert_records_forwarded_total", {}),
        "retry": ("otel_logbert_forward_retries_total", {}),
        "dropped": ("otel_logbert_records_dropped_total", {"reason": "dropped"}),
        "rejected": ("otel_logbert_records_dropped_total", {"reason": "rejected"}),
        "duplicates": ("otel_logbert_records_possible_duplicates_total", {"cause": "retry"}),
    }

    def __init__(self) -> None:
        self.metrics = Metrics()

    def __getitem__(self, outcome: str) -> float:
        name, labels = self.SAMPLES[outcome]
        return prometheus_value(self.metrics.prometheus_text().decode(), name, **labels)

    def latencies(self) -> float:
        """How many forward latencies were recorded (one per mark delivered)."""
        text = self.metrics.prometheus_text().decode()
        return prometheus_value(text, "otel_logbert_session_forward_latency_seconds_count")


def forwarder_for(exporter: LogsExporter, outcomes: Outcomes | None = None, **config: Any) -> Forwarder:
    return Forwarder(exporter, ForwardConfig(**config), (outcomes or Outcomes()).metrics)


async def deliver(forwarder: Forwarder, n: int, timeout_s: float = 10.0) -> int:
    task = asyncio.create_task(forwarder.run())
    forwarder.put(items(n))
    deadline = time.monotonic() + timeout_s
    while forwarder.pending_records and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    left = await forwarder.drain(0.1)
    await forwarder.close()
    return left


def test_grpc_retryable_codes_are_retried_until_delivered(otlp_sink: OtlpSink) -> None:
    otlp_sink.fail_next(2, grpc.StatusCode.UNAVAILABLE)
    outcomes = Outcomes()
    forwarder = forwarder_for(GrpcLogsExporter(otlp_sink.endpoint), outcomes, retry=FAST,
                          batch_max_records=3)
    assert asyncio.run(deliver(forwarder, 5)) == 0
    assert sorted(r.body.string_value for _, _, r in otlp_sink.records()) == [f"r{i}" for i in range(5)]
    assert outcomes["retry"] == 2 and outcomes["ok"] == 5 and outcomes["dropped"] == 0
    assert outcomes["duplicates"] == 0  # refused outright: the retry cannot duplicate anything
    assert outcomes.latencies() == 2  # one mark (ready together), delivered in two batches of <= 3


def test_grpc_permanent_error_drops_and_counts(otlp_sink: OtlpSink) -> None:
    otlp_sink.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT)
    outcomes = Outcomes()
    forwarder = forwarder_for(GrpcLogsExporter(otlp_sink.endpoint), outcomes, retry=FAST)
    asyncio.run(deliver(forwarder, 4))
    assert outcomes["dropped"] == 4 and outcomes["retry"] == 0 and outcomes["ok"] == 0
    assert otlp_sink.records() == []


class ScriptedServer:
    """A byte-level LogsService whose answers follow a script of (code, trailing metadata, reply)."""

    def __init__(self, script: list[tuple[grpc.StatusCode, tuple, bytes]], delays: tuple[float, ...] = ()) -> None:
        """``delays``: seconds to wait before answering the first calls (the body is kept at once)."""
        self.script = list(script)
        self.delays = list(delays)
        self.calls = 0
        self.bodies: list[bytes] = []

    async def export(self, body: bytes, context: Any) -> bytes:
        self.calls += 1
        self.bodies.append(body)
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        code, trailer, reply = self.script.pop(0) if self.script else (grpc.StatusCode.OK, (), b"")
        if code != grpc.StatusCode.OK:
            await context.abort(code, "scripted", trailing_metadata=trailer)
        return reply

    async def serve(self, scenario: Any) -> Any:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self.export)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await scenario(f"127.0.0.1:{port}")
        finally:
            await server.stop(0)


@pytest.mark.parametrize(
    ("with_retry_info", "expected"),
    [(True, {"retry": 1, "ok": 2, "dropped": 0}), (False, {"retry": 0, "ok": 0, "dropped": 2})],
)
def test_resource_exhausted_is_retryable_only_with_retry_info(with_retry_info: bool, expected: dict[str, int]) -> None:
    trailer = (retry_info_trailer(0.02, 8, "slow down"),) if with_retry_info else ()
    server = ScriptedServer([(grpc.StatusCode.RESOURCE_EXHAUSTED, trailer, b"")])
    outcomes = Outcomes()

    async def scenario(target: str) -> None:
        await deliver(forwarder_for(GrpcLogsExporter(target), outcomes, retry=FAST), 2)

    asyncio.run(server.serve(scenario))
    assert {outcome: outcomes[outcome] for outcome in expected} == expected


def test_partial_success_is_counted_not_retried() -> None:
    reply = logs_service_pb2.ExportLogsServiceResponse()
    reply.partial_success.rejected_log_records = 1
    reply.partial_success.error_message = "one was too old"
    server = ScriptedServer([(grpc.StatusCode.OK, (), reply.SerializeToString())])
    outcomes = Outcomes()

    async def scenario(target: str) -> None:
        await deliver(forwarder_for(GrpcLogsExporter(target), outcomes, retry=FAST), 3)

    asyncio.run(server.serve(scenario))
    assert (outcomes["ok"], outcomes["rejected"], outcomes["retry"]) == (2, 1, 0) and server.calls == 1


def test_a_retry_after_a_timeout_can_deliver_twice_and_counts_the_batch_as_possible_duplicates() -> None:
    """A downstream that takes the request but answers after ``forward.timeout_s``: the retry
    delivers the same batch again (at-least-once), and exactly that batch is counted."""
    server = ScriptedServer([], delays=(0.6,))
    outcomes = Outcomes()

    async def scenario(target: str) -> None:
        await deliver(forwarder_for(GrpcLogsExporter(target), outcomes, retry=FAST, timeout_s=0.2), 3)

    asyncio.run(server.serve(scenario))
    assert len(server.bodies) == 2 and server.bodies[0] == server.bodies[1]  # a real duplicate
    assert (outcomes["ok"], outcomes["retry"], outcomes["duplicates"]) == (3, 1, 3)


def test_retryable_failures_give_up_after_max_elapsed_when_configured() -> None:
    server = ScriptedServer([(grpc.StatusCode.UNAVAILABLE, (), b"")] * 1000)
    outcomes = Outcomes()
    retry = RetryConfig(initial_backoff_s=0.01, max_backoff_s=0.02, max_elapsed_s=0.1)

    async def scenario(target: str) -> None:
        await deliver(forwarder_for(GrpcLogsExporter(target), outcomes, retry=retry), 1)

    asyncio.run(server.serve(scenario))
    assert outcomes["dropped"] == 1 and outcomes["retry"] >= 1 and outcomes["ok"] == 0


async def http_server(responses: list[web.Response], received: list[bytes], scenario: Any) -> Any:
    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return responses.pop(0) if responses else web.Response(
            body=logs_service_pb2.ExportLogsServiceResponse().SerializeToString())

    app = web.Application()
    app.router.add_post("/v1/logs", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        return await scenario(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def test_http_exporter_retries_503_with_retry_after_and_drops_400() -> None:
    received: list[bytes] = []
    responses = [web.Response(status=503, headers={"Retry-After": "0"}), web.Response(status=400, text="bad")]
    outcomes = Outcomes()

    async def scenario(url: str) -> None:
        await deliver(forwarder_for(HttpLogsExporter(url), outcomes, retry=FAST, batch_max_records=2), 2)

    asyncio.run(http_server(responses, received, scenario))
    assert (outcomes["retry"], outcomes["dropped"], outcomes["ok"]) == (1, 2, 0)
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(received[0])
    assert len(request.resource_logs[0].scope_logs[0].log_records) == 2


def test_http_exporter_gzip_and_headers() -> None:
    received: list[bytes] = []

    async def scenario(url: str) -> None:
        exporter = HttpLogsExporter(url + "/v1/logs", headers={"X-Tenant": "a"}, gzip_=True)
        assert exporter.url == url + "/v1/logs" and exporter.headers["Content-Encoding"] == "gzip"
        await deliver(forwarder_for(exporter, None, retry=FAST), 1)

    asyncio.run(http_server([], received, scenario))
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(received[0])  # aiohttp decompressed it
    assert request.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "r0"


def test_connection_refused_is_retried_then_delivered_when_downstream_appears() -> None:
    from tests.conftest import free_port

    sink = OtlpSink(free_port())
    outcomes = Outcomes()

    async def scenario() -> int:
        forwarder = forwarder_for(GrpcLogsExporter(sink.endpoint), outcomes, retry=FAST, timeout_s=0.5)
        task = asyncio.create_task(forwarder.run())
        forwarder.put(items(3))
        while not outcomes["retry"]:
            await asyncio.sleep(0.01)
        sink.start()
        while forwarder.pending_records:
            await asyncio.sleep(0.01)
        task.cancel()
        left = await forwarder.drain(0.1)
        await forwarder.close()
        return left

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        sink.stop()
    assert len(sink.records()) == 3


def test_a_downstream_back_after_an_outage_is_reached_within_the_retry_delay() -> None:
    """gRPC's own reconnect backoff grows to minutes while the downstream is down (about 9 s into a
    6 s outage its next try is 7.4-11 s in); capped at the forwarder's ``max_backoff_s`` the records
    go out right after the downstream is back."""
    from tests.conftest import free_port

    sink = OtlpSink(free_port())
    retry = RetryConfig(initial_backoff_s=0.05, max_backoff_s=0.2)

    async def scenario() -> float:
        exporter = GrpcLogsExporter(sink.endpoint, max_reconnect_backoff_s=retry.max_backoff_s)
        forwarder = forwarder_for(exporter, None, retry=retry, timeout_s=0.5)
        task = asyncio.create_task(forwarder.run())
        forwarder.put(items(3))
        await asyncio.sleep(6.0)
        sink.start()
        back = time.monotonic()
        while forwarder.pending_records and time.monotonic() < back + 30:
            await asyncio.sleep(0.01)
        took = time.monotonic() - back
        task.cancel()
        await forwarder.drain(0.1)
        await forwarder.close()
        return took

    try:
        took = asyncio.run(scenario())
    finally:
        sink.stop()
    assert len(sink.records()) == 3
    assert took < 1.2, f"delivered {took:.1f} s after the downstream came back"


def test_admission_never_refuses_an_empty_backlog() -> None:
    async def scenario() -> list[bool]:
        forwarder = forwarder_for(GrpcLogsExporter("127.0.0.1:1"))
        admission = Admission(10, [forwarder])
        answers = [fits(admission, 1000)]  # empty: even a request over the whole limit is taken
        forwarder.put(items(8))
        return [*answers, fits(admission, 2), fits(admission, 3)]

    assert asyncio.run(scenario()) == [True, True, False]


def fits(admission: Admission, records: int) -> bool:
    try:
        admission.check(records)
    except Refused as exc:
        assert exc.reason == "backpressure" and "8 records waiting" in str(exc)
        return False
    return True


def test_forwarder_refuses_settings_that_would_block_forever() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        forwarder_for(GrpcLogsExporter("127.0.0.1:1"), max_in_flight=0)
    with pytest.raises(ValueError, match="max_batch"):
        forwarder_for(GrpcLogsExporter("127.0.0.1:1"), batch_max_records=0)


def test_retry_helpers() -> None:
    assert retry_info_delay([retry_info_trailer(2.5, 8, "x")]) == 2.5
    assert retry_info_delay([("other", b"x")]) is None and retry_info_delay(None) is None
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (parse_retry_after(future) or 0) <= 30
    backoff = Backoff(1.0, 4.0)
    delays = [backoff.next() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.5 and all(d <= 4.0 for d in delays) and delays[-1] >= 2.0
    assert backoff.next(hint=10.0) == 4.0 and backoff.next(hint=0.5) == 0.5
