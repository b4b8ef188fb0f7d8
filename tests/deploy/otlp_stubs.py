"""Small in-process OTLP endpoints for the real-Collector tests.

`HttpLogsReceiver` (aiohttp, POST /v1/logs) and `GrpcSink` (grpcio LogsService + TraceService)
record what they receive: a sidecar that pushes back (the receiver's 503s), and the Collector's
second receiver after the sidecar (the sinks). They only listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


def any_value(v: AnyValue):
    """The Python value inside an AnyValue (scalars only; enough for these tests)."""
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def record_dict(resource_attrs: dict, record: LogRecord) -> dict:
    """One log record flattened for assertions."""
    return {
        "body": any_value(record.body),
        "attributes": {kv.key: any_value(kv.value) for kv in record.attributes},
        "resource": resource_attrs,
        "severity_text": record.severity_text,
        "severity_number": record.severity_number,
        "time_unix_nano": record.time_unix_nano,
    }


def flatten_logs(req: logs_service_pb2.ExportLogsServiceRequest) -> list[dict]:
    out = []
    for rl in req.resource_logs:
        res = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            out.extend(record_dict(res, r) for r in sl.log_records)
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until predicate() is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class HttpLogsReceiver:
    """OTLP/HTTP logs endpoint (protobuf). The first `reject_first` requests get 503 + Retry-After,
    like a sidecar whose queue is full, to show the exporter retries instead of dropping."""

    def __init__(self, port: int, reject_first: int = 0):
        self.port = port
        self.records: list[dict] = []
        self.requests = 0
        self.rejected = 0
        self._reject_first = reject_first
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.requests += 1
            if self.rejected < self._reject_first:
                self.rejected += 1
                return web.Response(status=503, headers={"Retry-After": "1"})
        assert request.content_type == "application/x-protobuf", request.content_type
        req = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        with self._lock:
            self.records.extend(flatten_logs(req))
        resp = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
        return web.Response(body=resp, content_type="application/x-protobuf")

    async def _start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/logs", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> HttpLogsReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class GrpcSink(logs_service_pb2_grpc.LogsServiceServicer, trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC logs + traces endpoint that records requests; `on_logs` may act on each request
    (the stand-in sidecar uses it to annotate and forward)."""

    def __init__(self, port: int,
                 on_logs: Callable[[logs_service_pb2.ExportLogsServiceRequest], None] | None = None):
        self.port = port
        self.logs: list[dict] = []
        self.spans: list = []
        self._on_logs = on_logs
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self._server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    def Export(self, request, context):  # noqa: N802 (gRPC method name); serves both services
        if isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
            with self._lock:
                self.logs.extend(flatten_logs(request))
            if self._on_logs is not None:
                self._on_logs(request)
            return logs_service_pb2.ExportLogsServiceResponse()
        with self._lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def __enter__(self) -> GrpcSink:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1).wait(5)
