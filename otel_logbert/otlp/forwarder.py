"""Forwarding enriched records downstream over OTLP (gRPC or HTTP), with retry and back-pressure.

``Forwarder`` holds a queue of ``(origin, serialized record)``; workers take up to
``batch_max_records`` at a time, regroup them under their resource and scope, and export the request.
Retry follows the OTLP specification:

- gRPC: UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS are retryable;
  RESOURCE_EXHAUSTED only with a ``RetryInfo`` detail; other codes are permanent.
- HTTP: 429, 502, 503, 504 and connection errors are retryable; other 4xx/5xx are permanent.
- A throttling hint (``RetryInfo.retry_delay`` / ``Retry-After``) sets the next delay; otherwise the
  delay grows exponentially from ``initial_backoff_s`` to ``max_backoff_s`` with jitter.
- A retryable failure is retried until it succeeds (``max_elapsed_s: 0``) or for ``max_elapsed_s``.
  Permanent failures are dropped and counted: retrying them can never succeed (OTLP says so too).
- Partial success from downstream (``rejected_log_records``) is logged and counted, not retried.

The queue never refuses records. Back-pressure is decided before records get here: the pipeline's
``Admission`` (``sidecar.pipeline``) counts this queue's ``pending_records`` with the scoring queue's
and refuses whole requests while they exceed ``forward.queue_max_records`` (the receivers answer
RESOURCE_EXHAUSTED / 503 with a retry hint), which is how back-pressure reaches the Collector's
sending queue.

Delivery is at-least-once: an attempt whose outcome is unknown (``ExportOutcome.uncertain``: it timed
out, or the connection broke after the request went out) may have been delivered, so its retry can
deliver the batch twice. Each such re-send counts its records in ``records_possible_duplicates``
(``cause: retry``): an upper bound on the duplicates downstream, at most one batch
(``batch_max_records``) per uncertain attempt.

With the persistent queue (``persistence.directory``) the forwarder tells its ``DeliveryJournal``
(``sidecar.wal``) about each batch: ``sending`` before the first attempt (awaited), ``settled`` once
it is delivered or dropped for good. A batch still retrying at shutdown is not settled: it stays in
the log for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from otel_logbert.batcher import Batcher
from otel_logbert.config import ForwardConfig
from otel_logbert.otlp.codec import (
    LOGS_EXPORT_METHOD,
    request_bytes,
    resource_logs_bytes,
    scope_logs_bytes,
)
from otel_logbert.otlp.endpoints import grpc_target, http_url
from otel_logbert.otlp.retry import (
    RETRYABLE_GRPC,
    RETRYABLE_HTTP,
    Backoff,
    parse_retry_after,
    retry_info_delay,
)
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.otlp.tls import ClientTls
from otel_logbert.sessions.session import Origin

log = logging.getLogger(__name__)

class Mark:
    """When a group of records (a session, or a request's unsessioned records) became ready to
    forward, in ``time.monotonic()`` seconds. Shared by the group's items: latency is per group."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


# A queued record: where it came from, its serialized bytes, the serialized attributes to append
# to them, the mark of its group, and its ticket in the persistent queue (0 without one).
Item = tuple[Origin, bytes, bytes, Mark, int]


class DeliveryJournal(Protocol):
    """Where the forwarder reports what happens to records (the persistent queue, by ticket)."""

    async def sending(self, tickets: Iterable[int]) -> None: ...

    def settled(self, tickets: Iterable[int]) -> None: ...


@dataclass(frozen=True)
class ExportOutcome:
    """The result of one export attempt. ``rejected``: records the receiver refused (partial success).
    ``uncertain``: a failure after which the downstream may still have taken the batch (a timeout, a
    connection lost mid-request), so a retry may duplicate it."""

    ok: bool
    retryable: bool = False
    retry_after_s: float | None = None
    message: str = ""
    rejected: int = 0
    uncertain: bool = False


# gRPC codes after which the request may have been processed: the deadline passed or the call was
# cut off. (UNAVAILABLE is mostly "could not connect"; counting it would count every outage retry.)
UNCERTAIN_GRPC = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
UNCERTAIN_HTTP = frozenset({504})  # a gateway timed out waiting for the receiver


class LogsExporter(ABC):
    """Sends one serialized ``ExportLogsServiceRequest``. Never raises: failures are outcomes."""

    @abstractmethod
    async def export(self, body: bytes, timeout_s: float) -> ExportOutcome: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; idempotent."""


RETIRED_CHANNEL_GRACE_S = 30.0
"""How long a channel replaced after a client certificate rotation keeps its calls in flight."""


class GrpcLogsExporter(LogsExporter):
    """OTLP/gRPC. ``tls`` (``forward.tls``) decides TLS and its files; without it, ``https://`` means
    TLS with the system roots. ``max_reconnect_backoff_s`` caps gRPC's own reconnect backoff (120 s
    by default, growing while the downstream is down), so a downstream that comes back is reached
    within the forwarder's retry delay (``forward.retry.max_backoff_s``) rather than minutes later:
    while the channel waits to reconnect every attempt fails at once. When ``tls``'s files rotate
    (``ClientTls.refresh``, checked before each export), the next export opens a new channel with
    them; the old one closes once its calls are done (at most ``RETIRED_CHANNEL_GRACE_S``)."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        gzip_: bool = False,
        tls: ClientTls | None = None,
        max_reconnect_backoff_s: float | None = None,
    ) -> None:
        self.target, https = grpc_target(endpoint)
        self.tls = tls.enabled if tls is not None else https
        self._tls = tls
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.compression = grpc.Compression.Gzip if gzip_ else grpc.Compression.NoCompression
        self.max_reconnect_backoff_s = max_reconnect_backoff_s
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._generation = 0  # of ``tls`` when the channel was built
        self._retiring: set[asyncio.Task[None]] = set()

    def _stub(self) -> grpc.aio.UnaryUnaryMultiCallable:
        tls = self._tls
        if tls is not None:
            tls.refresh()
            if self._call is not None and self._generation != tls.generation:
                self._retire_channel()
        if self._call is None:
            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            if self.max_reconnect_backoff_s is not None:
                cap_ms = max(1, int(self.max_reconnect_backoff_s * 1000))
                options += [("grpc.max_reconnect_backoff_ms", cap_ms),
                            ("grpc.initial_reconnect_backoff_ms", min(cap_ms, 1000))]
            if self.tls:
                tls = self._tls
                credentials = tls.grpc_credentials() if tls is not None else grpc.ssl_channel_credentials()
                options += tls.grpc_options() if tls is not None else []
                self._channel = grpc.aio.secure_channel(self.target, credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            # Bytes in, bytes out: the request is already serialized.
            self._call = self._channel.unary_unary(LOGS_EXPORT_METHOD)
            self._generation = self._tls.generation if self._tls is not None else 0
        return self._call

    def _retire_channel(self) -> None:
        """Drop the channel (built with older TLS files); it closes in the background."""
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            task = asyncio.get_running_loop().create_task(channel.close(grace=RETIRED_CHANNEL_GRACE_S))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def export(self, body: bytes, timeout_s: float) -> ExportOutcome:
        try:
            reply = await self._stub()(
                body, timeout=timeout_s, metadata=self.metadata or None, compression=self.compression
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            delay = retry_info_delay(exc.trailing_metadata())
            retryable = code in RETRYABLE_GRPC or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None
            )
            return ExportOutcome(False, retryable, delay, f"{code.name}: {exc.details()}",
                                 uncertain=code in UNCERTAIN_GRPC)
        except Exception as exc:  # channel-level surprises are treated as transient (and uncertain)
            return ExportOutcome(False, True, None, f"{type(exc).__name__}: {exc}", uncertain=True)
        return _partial(reply)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._call = None
        await asyncio.gather(*self._retiring, return_exceptions=True)  # calls still in flight on them


class HttpLogsExporter(LogsExporter):
    """OTLP/HTTP protobuf: ``POST <endpoint>/v1/logs``; ``tls`` (``forward.tls``): CA, client
    certificate and server name for an ``https://`` endpoint. Rotated files (``ClientTls.refresh``,
    checked before each export) give a new SSL context: new connections use them (aiohttp pools
    connections per context, so none made with the old files is reused)."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        gzip_: bool = False,
        tls: ClientTls | None = None,
    ) -> None:
        self._tls = tls
        self._ssl = tls.ssl_context() if tls is not None else None
        self._server_hostname = tls.server_name if tls is not None and tls.enabled else None
        self.url = http_url(endpoint, "/v1/logs", tls=self._ssl is not None)
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.gzip = gzip_
        if gzip_:
            self.headers["Content-Encoding"] = "gzip"
        self._session = None

    async def export(self, body: bytes, timeout_s: float) -> ExportOutcome:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload = gzip.compress(body, compresslevel=1) if self.gzip else body
        try:
            extra = {}
            if self._tls is not None and self._tls.refresh():
                self._ssl = self._tls.ssl_context()
            if self._ssl is not None:
                extra["ssl"] = self._ssl
                if self._server_hostname:
                    extra["server_hostname"] = self._server_hostname
            async with self._session.post(
                self.url, data=payload, headers=self.headers, timeout=aiohttp.ClientTimeout(total=timeout_s), **extra
            ) as response:
                content = await response.read()
                if response.status == 200:
                    return _partial(content)
                retryable = response.status in RETRYABLE_HTTP
                delay = parse_retry_after(response.headers.get("Retry-After"))
                text = content[:200].decode("utf-8", "replace").strip()
                return ExportOutcome(False, retryable, delay, f"HTTP {response.status}: {text}",
                                     uncertain=response.status in UNCERTAIN_HTTP)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            # Not connecting at all never delivers; a timeout or a connection lost later may have.
            uncertain = not isinstance(exc, aiohttp.ClientConnectorError)
            return ExportOutcome(False, True, None, f"{type(exc).__name__}: {exc}", uncertain=uncertain)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _partial(reply: bytes) -> ExportOutcome:
    response = logs_service_pb2.ExportLogsServiceResponse()
    with contextlib.suppress(DecodeError):
        response.ParseFromString(reply)
    rejected = response.partial_success.rejected_log_records
    return ExportOutcome(True, rejected=rejected, message=response.partial_success.error_message)


def build_exporter(
    config: ForwardConfig, endpoint: str | None = None, protocol: str | None = None
) -> LogsExporter:
    """The log exporter of ``forward`` (its TLS from ``forward.tls``). Raises ``UserError`` when the
    TLS files do not load."""
    endpoint = endpoint or config.endpoint
    protocol = protocol or config.protocol
    gzip_ = config.compression == "gzip"
    tls = ClientTls(config.tls, endpoint, "forward.tls")
    if protocol == "grpc":
        return GrpcLogsExporter(endpoint, config.headers, gzip_, tls, config.retry.max_backoff_s)
    return HttpLogsExporter(endpoint, config.headers, gzip_, tls)


def build_request(items: list[Item]) -> bytes:
    """Serialized ``ExportLogsServiceRequest``: records regrouped under their resource and scope,
    in first-seen order."""
    resources: dict[tuple[bytes | None, bytes], dict[tuple[bytes | None, bytes], list[tuple[bytes, bytes]]]] = {}
    for origin, data, suffix, _, _ in items:
        scopes = resources.get(origin.resource_key)
        if scopes is None:
            scopes = resources[origin.resource_key] = {}
        records = scopes.get(origin.scope_key)
        if records is None:
            records = scopes[origin.scope_key] = []
        records.append((data, suffix))
    out = []
    for (resource, resource_schema), scopes in resources.items():
        scope_logs = [scope_logs_bytes(scope, schema, records) for (scope, schema), records in scopes.items()]
        out.append(resource_logs_bytes(resource, resource_schema, scope_logs))
    return request_bytes(out)


class Forwarder:
    """The forward queue: records in (``put``), OTLP export requests out, with the retry rules above.

    Records the forwarding metrics itself (``records_forwarded``, ``forward_retries``,
    ``records_dropped``, ``forward_latency``: from ready to acknowledged, once per ``Mark``).
    ``pending_records`` (queued or being exported) is what the pipeline's back-pressure counts.
    """

    def __init__(
        self, exporter: LogsExporter, config: ForwardConfig, metrics: Metrics, journal: DeliveryJournal | None = None
    ) -> None:
        """Raises ``ValueError`` for a ``batch_max_records`` or ``max_in_flight`` below 1."""
        self.exporter = exporter
        self.journal = journal
        self.config = config
        self.metrics = metrics
        self.last_error = ""
        self._stopping = asyncio.Event()
        self._batcher: Batcher[Item] = Batcher(
            self._send, max_batch=config.batch_max_records, max_in_flight=config.max_in_flight
        )

    @property
    def pending_records(self) -> int:
        """Records queued or being exported."""
        return self._batcher.pending

    def put(self, items: list[Item]) -> None:
        """Queue records for export (never blocks, never refuses)."""
        self._batcher.put(items)

    async def run(self) -> None:
        """Export batches forever (until cancelled)."""
        await self._batcher.run()

    async def drain(self, timeout_s: float) -> int:
        """Export everything queued, waiting up to ``timeout_s``; returns the records left undelivered
        (retry loops still waiting are stopped)."""
        await self._batcher.drain(timeout_s)
        self._stopping.set()  # retry loops give up at their next wake-up
        left = self.pending_records
        await self._batcher.cancel()
        return left

    async def close(self) -> None:
        await self.exporter.close()

    async def _send(self, batch: list[Item]) -> None:
        body = build_request(batch)
        journal = self.journal
        tickets = [item[4] for item in batch] if journal is not None else []
        if journal is not None:
            await journal.sending(tickets)
        started = time.monotonic()
        retry, metrics = self.config.retry, self.metrics
        backoff = Backoff(retry.initial_backoff_s, retry.max_backoff_s)
        uncertain = False  # the previous attempt may have been delivered
        while True:
            if uncertain:
                metrics.records_possible_duplicates.add(len(batch), {"cause": "retry"})
            outcome = await self.exporter.export(body, self.config.timeout_s)
            if outcome.ok:
                self._delivered(batch, outcome)
                if journal is not None:
                    journal.settled(tickets)
                return
            self.last_error = outcome.message
            elapsed = time.monotonic() - started
            if not outcome.retryable or (retry.max_elapsed_s and elapsed >= retry.max_elapsed_s):
                why = "permanent error" if not outcome.retryable else f"still failing after {elapsed:.0f}s"
                log.error(
                    "forwarding failed; records dropped",
                    extra={"records": len(batch), "why": why, "error": outcome.message},
                )
                metrics.records_dropped.add(len(batch), {"reason": "dropped"})
                if journal is not None:  # retrying can never succeed: not replayed either
                    journal.settled(tickets)
                return
            delay = backoff.next(outcome.retry_after_s)
            log.warning(
                "forwarding failed; will retry",
                extra={"records": len(batch), "retry_in_s": round(delay, 3), "error": outcome.message},
            )
            metrics.forward_retries.add(1)
            uncertain = outcome.uncertain
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return

    def _delivered(self, batch: list[Item], outcome: ExportOutcome) -> None:
        self.last_error = ""
        now = time.monotonic()
        for mark in {id(item[3]): item[3] for item in batch}.values():
            self.metrics.forward_latency.record(now - mark.at)
        self.metrics.records_forwarded.add(len(batch) - outcome.rejected)
        if outcome.rejected:
            log.warning(
                "downstream rejected records (partial success)",
                extra={"rejected": outcome.rejected, "error": outcome.message},
            )
            self.metrics.records_dropped.add(outcome.rejected, {"reason": "rejected"})
