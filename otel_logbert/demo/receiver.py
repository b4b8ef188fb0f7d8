"""The demo's downstream: a local OTLP/gRPC receiver for the enriched logs and the span events.

It stands where the Collector's second receiver would be in production. It keeps every request it
accepts (as decoded protobuf messages) and counts records and spans as they arrive:

    with OtlpReceiver() as receiver:                     # listens on a free 127.0.0.1 port
        ...                                              # point the sidecar at receiver.endpoint
        receiver.wait_until_records(n, timeout_s=60)     # True when n records arrived
        requests = receiver.log_requests()

The tests' ``OtlpSink`` (tests/conftest.py) builds on it: the hooks ``_register`` (more services),
``_decode_logs`` and ``_export_logs`` are what it overrides.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        self.owner._add_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """OTLP/gRPC ``LogsService`` and ``TraceService`` on ``host``:``port`` (0 = a free port, kept
    after the first ``start``, so ``stop`` then ``start`` comes back on the same port).

    ``logs`` / ``traces`` hold the accepted requests in arrival order; ``record_count`` /
    ``span_count`` count what they carry. Thread-safe. ``start`` raises ``OSError`` when the port
    cannot be bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.record_count = 0
        self.span_count = 0
        self.first_at: float | None = None  # time.monotonic() of the first / latest log request
        self.last_at: float | None = None
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """The URL an OTLP/gRPC exporter points at (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OtlpReceiver:
        options = [("grpc.max_receive_message_length", self.max_message_bytes)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        self._register(server)
        bound = self._bind(server, f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace=grace_s).wait()
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- hooks --------------------------------------------------------------------------------------

    def _bind(self, server: grpc.Server, address: str) -> int:
        """Add the listening port (plaintext here; tests add TLS); returns the bound port, 0 on failure."""
        return server.add_insecure_port(address)

    def _register(self, server: grpc.Server) -> None:
        """Add the services to ``server``: logs (decoded by ``_decode_logs``), traces."""
        logs = grpc.unary_unary_rpc_method_handler(
            self._export_logs, request_deserializer=self._decode_logs,
            response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": logs}),))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)

    def _decode_logs(self, body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
        return logs_service_pb2.ExportLogsServiceRequest.FromString(body)

    def _export_logs(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()

    # --- what arrived -------------------------------------------------------------------------------

    def _add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self._changed:
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.last_at = now
            self.logs.append(request)
            self.record_count += n
            self._changed.notify_all()

    def _add_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._changed:
            self.traces.append(request)
            self.span_count += n
            self._changed.notify_all()

    def wait_until_records(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` log records arrived (True) or ``timeout_s`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.record_count >= n, timeout=timeout_s)

    def wait_until_spans(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` spans arrived (True) or ``timeout_s`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.span_count >= n, timeout=timeout_s)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Block until nothing arrived for ``quiet_s`` seconds (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            seen = (self.record_count, self.span_count)
            while time.monotonic() < deadline:
                self._changed.wait(timeout=quiet_s)
                now = (self.record_count, self.span_count)
                if now == seen:
                    return
                seen = now

    def clear(self) -> None:
        """Forget what arrived (requests and counts)."""
        with self._changed:
            self.logs.clear()
            self.traces.clear()
            self.record_count = self.span_count = 0
            self.first_at = self.last_at = None

    def log_requests(self) -> list[logs_service_pb2.ExportLogsServiceRequest]:
        with self._changed:
            return list(self.logs)

    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._changed:
            return list(self.traces)

    def records(self) -> list[tuple[Any, Any, Any]]:
        """Every received log record as ``(resource, scope, record)``, in arrival order."""
        return [
            (rl.resource, sl.scope, record)
            for request in self.log_requests()
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]

    def spans(self) -> list[tuple[Any, Any]]:
        """Every received span as ``(resource, span)``, in arrival order."""
        return [(rs.resource, span) for r in self.trace_requests() for rs in r.resource_spans
                for ss in rs.scope_spans for span in ss.spans]
