"""OTLP receivers: gRPC ``LogsService/Export`` and HTTP ``POST /v1/logs`` (protobuf and JSON).

Both hand a decoded request to an ``Intake`` (the sidecar) and answer success only after
``Intake.accept`` returned, i.e. once every record is held by the sidecar (in a session or in the
forward queue). Errors follow the OTLP specification so a Collector's exporter does the right thing:

| situation                    | gRPC                                  | HTTP              |
| ---------------------------- | ------------------------------------- | ----------------- |
| malformed protobuf / JSON    | INVALID_ARGUMENT (not retried)        | 400 (not retried) |
| wrong content type           | -                                     | 415               |
| request too large            | RESOURCE_EXHAUSTED (gRPC's own limit) | 413               |
| sidecar full (back-pressure) | RESOURCE_EXHAUSTED + RetryInfo        | 503 + Retry-After |
| shutting down                | UNAVAILABLE                           | 503 + Retry-After |

Error bodies on HTTP are ``google.rpc.Status`` in the request's encoding. Every message is one line.
The sidecar never rejects part of a request, so responses carry no ``partial_success``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from otel_logbert.config import GrpcReceiverConfig, HttpReceiverConfig
from otel_logbert.otlp.codec import (
    LOGS_SERVICE,
    MalformedRequest,
    decode_json,
    decode_protobuf,
    encode_json_response,
)
from otel_logbert.otlp.retry import retry_info_trailer
from otel_logbert.otlp.telemetry import Metrics

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EMPTY_RESPONSE = logs_service_pb2.ExportLogsServiceResponse()
EMPTY_RESPONSE_BYTES = EMPTY_RESPONSE.SerializeToString()
EMPTY_RESPONSE_JSON = encode_json_response(EMPTY_RESPONSE)


class Refused(Exception):
    """The intake cannot take the request now. ``reason``: ``backpressure`` or ``shutting_down``."""

    def __init__(self, reason: str, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Intake(Protocol):
    async def accept(self, request: Message, protocol: str) -> int:
        """Take every record of a lenient ``ExportLogsServiceRequest``; returns how many once all
        are held. Raises ``Refused`` (nothing taken) when it cannot."""
        ...


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Receiver:
    """What both receivers share: the intake they hand requests to, where they listen, the largest
    request they take, and counting refused requests (``requests_refused``, by protocol and reason)."""

    protocol = ""

    def __init__(self, intake: Intake, endpoint: str, max_bytes: int, metrics: Metrics) -> None:
        self.intake = intake
        self.endpoint = endpoint
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.port = 0  # the bound port once started

    def _refused(self, reason: str) -> None:
        self.metrics.requests_refused.add(1, {"protocol": self.protocol, "reason": reason})


class GrpcReceiver(Receiver):
    protocol = "grpc"

    def __init__(self, intake: Intake, config: GrpcReceiverConfig, metrics: Metrics) -> None:
        assert config.endpoint is not None
        super().__init__(intake, config.endpoint, config.max_message_bytes, metrics)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port cannot be bound."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": handler}),)
        )
        host, port = split_endpoint(self.endpoint)
        try:
            self.port = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise OSError(f"receivers.grpc.endpoint {self.endpoint}: cannot listen ({exc})") from None
        if self.port == 0:
            raise OSError(f"receivers.grpc.endpoint {self.endpoint}: cannot listen (address in use?)")
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let calls in progress finish for up to ``grace_s``."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            request = decode_protobuf(body)
        except MalformedRequest as exc:
            self._refused("malformed")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            await self.intake.accept(request, "grpc")
        except Refused as exc:
            self._refused(exc.reason)
            if exc.reason == "backpressure":
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                trailer = retry_info_trailer(exc.retry_after_s, code.value[0], str(exc))
                await context.abort(code, str(exc), trailing_metadata=(trailer,))
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return EMPTY_RESPONSE_BYTES


class HttpReceiver(Receiver):
    protocol = "http"

    def __init__(self, intake: Intake, config: HttpReceiverConfig, metrics: Metrics) -> None:
        assert config.endpoint is not None
        super().__init__(intake, config.endpoint, config.max_body_bytes, metrics)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port cannot be bound."""
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_post("/v1/logs", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_endpoint(self.endpoint)
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                f"receivers.http.endpoint {self.endpoint}: cannot listen ({exc.strerror})"
            ) from None
        server = site._server  # the asyncio server, to learn the bound port when port 0 was asked
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _export(self, request: web.Request) -> web.StreamResponse:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            return self._error(
                415,
                f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}",
                PROTOBUF,
                "unsupported_media",
            )
        length = request.content_length
        if length is not None and length > self.max_bytes:
            return self._error(
                413,
                f"request body of {length} bytes exceeds {self.max_bytes}",
                content_type,
                "too_large",
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(
                413, f"request body exceeds {self.max_bytes} bytes", content_type, "too_large"
            )
        try:
            decoded = decode_protobuf(body) if content_type == PROTOBUF else decode_json(body)
        except MalformedRequest as exc:
            return self._error(400, str(exc), content_type, "malformed")
        try:
            await self.intake.accept(decoded, "http")
        except Refused as exc:
            return self._error(503, str(exc), content_type, exc.reason, retry_after=exc.retry_after_s)
        if content_type == PROTOBUF:
            return web.Response(body=EMPTY_RESPONSE_BYTES, content_type=PROTOBUF)
        return web.Response(body=EMPTY_RESPONSE_JSON, content_type=JSON)

    def _error(
        self, status: int, message: str, content_type: str, reason: str, retry_after: float | None = None
    ) -> web.Response:
        self._refused(reason)
        body_status = status_pb2.Status(code=_GRPC_EQUIVALENT.get(status, 2), message=message)
        if content_type == JSON:
            body = json_format.MessageToJson(body_status, indent=None).encode()
        else:
            body = body_status.SerializeToString()
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)


# HTTP status -> google.rpc.Code for the Status body.
_GRPC_EQUIVALENT = {400: 3, 413: 8, 415: 3, 503: 14}
