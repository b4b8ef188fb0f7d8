"""OTLP receivers: gRPC ``LogsService/Export`` and HTTP ``POST /v1/logs`` (protobuf and JSON).

Both hand a decoded request to an ``Intake`` (the sidecar) and answer success only after
``Intake.accept`` returned, i.e. once every record is held by the sidecar (in a session or in the
forward queue). Errors follow the OTLP specification so a Collector's exporter does the right thing:

| situation                               | gRPC                                  | HTTP              |
| --------------------------------------- | ------------------------------------- | ----------------- |
| missing or wrong bearer token           | UNAUTHENTICATED                       | 401               |
| malformed protobuf / JSON, bad gzip     | INVALID_ARGUMENT (not retried)        | 400 (not retried) |
| wrong content type or Content-Encoding  | -                                     | 415               |
| request too large (bytes, inflated)     | RESOURCE_EXHAUSTED (gRPC's own limit) | 413               |
| too many records / attributes           | RESOURCE_EXHAUSTED (no RetryInfo)     | 413               |
| sidecar full (back-pressure)            | RESOURCE_EXHAUSTED + RetryInfo        | 503 + Retry-After |
| shutting down                           | UNAVAILABLE                           | 503 + Retry-After |
| body not received within read_timeout_s | -                                     | 408, closed       |
| connection past max_connections         | (grpc-core closes it: UNAVAILABLE)    | 503, closed       |

Error bodies on HTTP are ``google.rpc.Status`` in the request's encoding. Every message is one line.
The sidecar never rejects part of a request, so responses carry no ``partial_success``. Every refusal
is counted in ``requests_refused`` by protocol and reason. The HTTP receiver inflates the body itself,
as it streams in, up to ``max_body_bytes`` (``otlp.inflate``); an HTTP error answered before the body
was read closes the connection, so the rest of the body is never read. TLS (``otlp.tls``) and the
bearer token (``otlp.auth``) are checked before anything else.

Slow and numerous clients are bounded per receiver (``receivers.grpc`` / ``receivers.http`` keys):
gRPC by streams per connection, connections and idle time (grpc-core's channel arguments; a gRPC
message is read by grpc-core before the handler runs, so the caller's deadline is the only read
deadline there); HTTP by open connections (``otlp.http_server``), the time to a whole request header
(aiohttp's keep-alive timeout, from the connection's start) and the time to the whole body (408).
"""

from __future__ import annotations

import asyncio
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
from otel_logbert.otlp.auth import BearerToken
from otel_logbert.otlp.codec import (
    LOGS_SERVICE,
    MalformedRequest,
    decode_json,
    decode_protobuf,
    encode_json_response,
)
from otel_logbert.otlp.http_server import BoundedServer
from otel_logbert.otlp.inflate import BadEncoding, TooLarge, UnsupportedEncoding, read_body
from otel_logbert.otlp.limits import AttributeTooLarge, LimitExceeded, RequestLimits
from otel_logbert.otlp.retry import retry_info_trailer
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.otlp.tls import ServerTls

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EMPTY_RESPONSE = logs_service_pb2.ExportLogsServiceResponse()
EMPTY_RESPONSE_BYTES = EMPTY_RESPONSE.SerializeToString()
EMPTY_RESPONSE_JSON = encode_json_response(EMPTY_RESPONSE)
# After an error answered before the whole body was read, the rest is read and discarded for at most
# this long before the connection closes, so the client sees the answer (aiohttp's lingering close;
# its default of 10 s would let a client trickling its body hold the connection that long).
LINGER_S = 2.0


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


UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token"


class Receiver:
    """What both receivers share: the intake they hand requests to, where they listen, the largest
    request they take, its TLS, the bearer token requests must carry (``auth``; None: any), the
    per-request bounds (``limits``), and counting refused requests (``requests_refused``, by protocol
    and reason)."""

    protocol = ""

    def __init__(
        self,
        intake: Intake,
        endpoint: str,
        max_bytes: int,
        metrics: Metrics,
        tls: ServerTls | None,
        auth: BearerToken | None,
        limits: RequestLimits,
    ) -> None:
        self.intake = intake
        self.endpoint = endpoint
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.tls = tls
        self.auth = auth
        self.limits = limits
        self.port = 0  # the bound port once started

    def _refused(self, reason: str) -> None:
        self.metrics.requests_refused.add(1, {"protocol": self.protocol, "reason": reason})


class GrpcReceiver(Receiver):
    protocol = "grpc"

    def __init__(
        self,
        intake: Intake,
        config: GrpcReceiverConfig,
        metrics: Metrics,
        *,
        auth: BearerToken | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        """Raises ``UserError`` when the TLS files do not load."""
        assert config.endpoint is not None
        tls = ServerTls.from_config(config.tls, "receivers.grpc.tls")
        super().__init__(
            intake, config.endpoint, config.max_message_bytes, metrics, tls, auth, limits or RequestLimits()
        )
        self.config = config
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port cannot be bound, ``UserError`` for TLS settings
        grpcio cannot honour. A server that fails to listen is stopped before raising (an aio server
        dropped without ``stop`` can crash the process later, when it is collected)."""
        credentials = self.tls.grpc_credentials() if self.tls is not None else None
        config = self.config
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", self.max_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ]
        if config.max_connections:
            options.append(("grpc.max_allowed_incoming_connections", config.max_connections))
        if config.idle_timeout_s:
            options.append(("grpc.max_connection_idle_ms", round(config.idle_timeout_s * 1000)))
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs or None)
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # raw bytes in and out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": handler}),)
        )
        host, port = split_endpoint(self.endpoint)
        address = f"{host}:{port}"
        problem = None
        try:
            if credentials is not None:
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            problem = str(exc)
        if problem is None and self.port == 0:
            problem = "address in use?"
        if problem is not None:
            await server.stop(None)
            raise OSError(f"receivers.grpc.endpoint {self.endpoint}: cannot listen ({problem})")
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let calls in progress finish for up to ``grace_s``."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    async def _export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """One ``Export`` call. Refusals are answered by setting the status on ``context`` and
        returning, never with ``context.abort``: the ``AbortError`` it raises is kept by grpc's call
        state and, through its traceback, keeps this frame (the decoded request) alive in a
        reference cycle until a rare full collection (a refusal storm of 178 KB requests took RSS
        from 123 to 1,026 MiB that way)."""
        if self.auth is not None and not self.auth.accepts(_authorization(context)):
            return self._fail(context, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        try:
            request = decode_protobuf(body)
        except MalformedRequest as exc:
            return self._fail(context, "malformed", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        del body
        try:
            self.limits.check(request)
        except AttributeTooLarge as exc:
            return self._fail(context, "limits", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except LimitExceeded as exc:
            return self._fail(context, "limits", grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            await self.intake.accept(request, "grpc")
        except Refused as exc:
            if exc.reason == "backpressure":
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                trailer = retry_info_trailer(exc.retry_after_s, code.value[0], str(exc))
                return self._fail(context, exc.reason, code, str(exc), trailer)
            return self._fail(context, exc.reason, grpc.StatusCode.UNAVAILABLE, str(exc))
        return EMPTY_RESPONSE_BYTES

    def _fail(
        self,
        context: grpc.aio.ServicerContext,
        reason: str,
        code: grpc.StatusCode,
        message: str,
        trailer: tuple[str, bytes] | None = None,
    ) -> bytes:
        """Count the refusal and set the call's status; the returned (empty) body is not sent."""
        self._refused(reason)
        context.set_code(code)
        context.set_details(message)
        if trailer is not None:
            context.set_trailing_metadata((trailer,))
        return b""


class HttpReceiver(Receiver):
    protocol = "http"

    def __init__(
        self,
        intake: Intake,
        config: HttpReceiverConfig,
        metrics: Metrics,
        *,
        auth: BearerToken | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        """Raises ``UserError`` when the TLS files do not load."""
        assert config.endpoint is not None
        tls = ServerTls.from_config(config.tls, "receivers.http.tls")
        super().__init__(
            intake, config.endpoint, config.max_body_bytes, metrics, tls, auth, limits or RequestLimits()
        )
        self.config = config
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port cannot be bound."""
        config = self.config
        # The body is inflated by ``read_body`` under the limit; aiohttp's own decompression would
        # inflate a whole bomb (also after the answer, draining the body for keep-alive).
        server = BoundedServer(
            self._route,
            max_connections=config.max_connections,
            on_refused=self._connection_refused,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=config.idle_timeout_s,
            lingering_time=LINGER_S,
        )
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        host, port = split_endpoint(self.endpoint)
        ssl_context = self.tls.ssl_context() if self.tls is not None else None
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
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

    def _connection_refused(self) -> None:
        self.metrics.connections_refused.add(1, {"protocol": self.protocol, "reason": "max_connections"})

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/v1/logs":
            return web.Response(status=404, text=f"no such path {request.path[:100]!r}: OTLP logs go to /v1/logs")
        if request.method != "POST":
            return web.Response(status=405, text="use POST", headers={"Allow": "POST"})
        return await self._export(request)

    async def _export(self, request: web.BaseRequest) -> web.StreamResponse:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            return self._error(
                415,
                f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}",
                PROTOBUF,
                "unsupported_media",
                close=True,
            )
        if self.auth is not None and not self.auth.accepts(request.headers.get("Authorization")):
            return self._error(401, UNAUTHENTICATED_MESSAGE, content_type, "unauthenticated", close=True)
        length = request.content_length
        if length is not None and length > self.max_bytes:
            return self._error(
                413,
                f"request body of {length} bytes exceeds {self.max_bytes}",
                content_type,
                "too_large",
                close=True,
            )
        timeout_s = self.config.read_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                body = await read_body(request.content, request.headers.get("Content-Encoding"), self.max_bytes)
        except TimeoutError:
            message = f"request body not received within {timeout_s:g} s (receivers.http.read_timeout_s)"
            return self._error(408, message, content_type, "read_timeout", close=True)
        except UnsupportedEncoding as exc:
            return self._error(415, str(exc), content_type, "unsupported_media", close=True)
        except BadEncoding as exc:
            return self._error(400, str(exc), content_type, "malformed", close=True)
        except TooLarge as exc:
            return self._error(413, str(exc), content_type, "too_large", close=True)
        try:
            decoded = decode_protobuf(body) if content_type == PROTOBUF else decode_json(body)
        except MalformedRequest as exc:
            return self._error(400, str(exc), content_type, "malformed")
        del body
        try:
            self.limits.check(decoded)
        except AttributeTooLarge as exc:
            return self._error(400, str(exc), content_type, "limits")
        except LimitExceeded as exc:
            return self._error(413, str(exc), content_type, "limits")
        try:
            await self.intake.accept(decoded, "http")
        except Refused as exc:
            return self._error(503, str(exc), content_type, exc.reason, retry_after=exc.retry_after_s)
        if content_type == PROTOBUF:
            return web.Response(body=EMPTY_RESPONSE_BYTES, content_type=PROTOBUF)
        return web.Response(body=EMPTY_RESPONSE_JSON, content_type=JSON)

    def _error(
        self,
        status: int,
        message: str,
        content_type: str,
        reason: str,
        retry_after: float | None = None,
        close: bool = False,
    ) -> web.Response:
        """An error answer; ``close``: the body was not (fully) read, so the connection is closed
        instead of reading the rest of it."""
        self._refused(reason)
        body_status = status_pb2.Status(code=_GRPC_EQUIVALENT.get(status, 2), message=message)
        if content_type == JSON:
            body = json_format.MessageToJson(body_status, indent=None).encode()
        else:
            body = body_status.SerializeToString()
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        response = web.Response(status=status, body=body, content_type=content_type, headers=headers or None)
        if close:
            response.force_close()
        return response


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


# HTTP status -> google.rpc.Code for the Status body.
_GRPC_EQUIVALENT = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 503: 14}
