"""The demo's downstream: a local OTLP/gRPC receiver for the enriched logs and the span events.

It stands where the Collector's second receiver would be in production. It keeps every request it
accepts (as decoded protobuf messages) and counts records and spans as they arrive:

    with OtlpReceiver() as receiver:               # listens on a free 127.0.0.1 port
        ...                                        # point the sidecar at receiver.endpoint
        receiver.wait_for_records(n, timeout_s=60) # True when n records arrived
        requests = receiver.log_requests()
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        self.owner._add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        self.owner._add_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """OTLP/gRPC ``LogsService`` and ``TraceService`` on ``host``:``port`` (0 = a free port).

    Thread-safe. ``start`` raises ``OSError`` when the port cannot be bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.records = 0
        self.spans = 0
        self.first_at: float | None = None  # time.monotonic() of the first / latest log request
        self.last_at: float | None = None
        self._logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """The URL an OTLP/gRPC exporter points at (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OtlpReceiver:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1.0).wait()
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self._changed:
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.last_at = now
            self._logs.append(request)
            self.records += n
            self._changed.notify_all()

    def _add_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._changed:
            self._traces.append(request)
            self.spans += n
            self._changed.notify_all()

    def wait_for_records(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` log records arrived (True) or ``timeout_s`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.records >= n, timeout=timeout_s)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Block until nothing arrived for ``quiet_s`` seconds (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            seen = (self.records, self.spans)
            while time.monotonic() < deadline:
                self._changed.wait(timeout=quiet_s)
                now = (self.records, self.spans)
                if now == seen:
                    return
                seen = now

    def log_requests(self) -> list[logs_service_pb2.ExportLogsServiceRequest]:
        with self._changed:
            return list(self._logs)

    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._changed:
            return list(self._traces)
