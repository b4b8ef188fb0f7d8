"""The sidecar's own telemetry: metrics, health endpoints, structured logs.

Metrics are OpenTelemetry SDK instruments (``Metrics``), read two ways: a Prometheus reader behind
``GET /metrics`` (names like ``otel_logbert_records_received_total``) and, when
``telemetry.otlp_metrics.enabled``, a periodic OTLP exporter. ``TelemetryServer`` serves
``/healthz`` (200 while the process runs), ``/readyz`` (200 once receivers listen and every scorer
is ready, 503 otherwise and while shutting down) and ``/metrics``. ``JsonFormatter`` writes one JSON
object per log line, with the ``extra`` fields of the call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from otel_logbert import __version__

# Seconds; fine at the low end, where the close -> forwarded latency target (50 ms) lies.
LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """Every instrument the sidecar records. ``gauges`` maps gauge names to callables read at
    collection time (set by the sidecar once its parts exist)."""

    def __init__(self, otlp_endpoint: str | None = None, otlp_interval_s: float = 30.0) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        self.registry = CollectorRegistry()
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            insecure = not otlp_endpoint.startswith("https://")
            exporter = OTLPMetricExporter(endpoint=otlp_endpoint.split("://", 1)[-1], insecure=insecure)
            readers.append(
                PeriodicExportingMetricReader(exporter, export_interval_millis=otlp_interval_s * 1000)
            )
        resource = Resource.create({"service.name": "otel-logbert", "service.version": __version__})
        self.provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self.provider.get_meter("otel_logbert.sidecar", __version__)

        self.records_received = meter.create_counter(
            "otel_logbert.records.received", unit="{record}", description="Log records accepted"
        )
        self.records_forwarded = meter.create_counter(
            "otel_logbert.records.forwarded", unit="{record}", description="Log records delivered downstream"
        )
        self.records_dropped = meter.create_counter(
            "otel_logbert.records.dropped",
            unit="{record}",
            description="Log records lost: permanent downstream errors, downstream partial success, shutdown",
        )
        self.records_unsessioned = meter.create_counter(
            "otel_logbert.records.unsessioned", unit="{record}", description="Records without a session key"
        )
        self.requests_refused = meter.create_counter(
            "otel_logbert.requests.refused",
            unit="{request}",
            description="Export requests answered with an error, by reason",
        )
        self.sessions_closed = meter.create_counter(
            "otel_logbert.sessions.closed", unit="{session}", description="Sessions closed, by reason"
        )
        self.sessions_scored = meter.create_counter(
            "otel_logbert.sessions.scored", unit="{session}", description="Sessions scored"
        )
        self.sessions_unscored = meter.create_counter(
            "otel_logbert.sessions.unscored", unit="{session}", description="Sessions not scored, by outcome"
        )
        self.sessions_anomalous = meter.create_counter(
            "otel_logbert.sessions.anomalous", unit="{session}", description="Scored sessions over threshold"
        )
        self.forward_retries = meter.create_counter(
            "otel_logbert.forward.retries",
            unit="{request}",
            description="Forward attempts that will be retried",
        )
        self.spans = meter.create_counter(
            "otel_logbert.spans", unit="{span}", description="Anomaly spans, by outcome"
        )
        self.scoring_duration = meter.create_histogram(
            "otel_logbert.scoring.duration",
            unit="s",
            description="Time to score one batch part",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.forward_latency = meter.create_histogram(
            "otel_logbert.session.forward_latency",
            unit="s",
            description="From session close to its records being acknowledged downstream",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.gauges: dict[str, Callable[[], float]] = {}
        for name, description in (
            ("sessions.open", "Open sessions"),
            ("buffer.records", "Log keys held by open sessions"),
            ("buffer.fill", "buffer.records / sessions.max_buffered_records"),
            ("queue.records", "Records closed but not yet delivered (scoring + forward queue)"),
            ("queue.fill", "queue.records / forward.queue_max_records"),
        ):
            meter.create_observable_gauge(
                f"otel_logbert.{name}", callbacks=[self._gauge_callback(name)], description=description
            )

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            read = self.gauges.get(name)
            return [Observation(float(read()))] if read is not None else []

        return callback

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()


class TelemetryServer:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``telemetry.endpoint``."""

    def __init__(self, metrics: Metrics, ready: Callable[[], tuple[bool, str]]) -> None:
        self.metrics = metrics
        self.ready = ready
        self.port = 0  # the bound port once started
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "reason": why}, status=200 if ok else 503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.prometheus_text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


# --- structured logs --------------------------------------------------------------------------------

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the call's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        return line + "".join(f" {k}={v}" for k, v in extras.items())


def configure_logging(log_format: str, level: str | int = logging.INFO) -> None:
    """Route the root logger to stderr in ``json`` or ``text`` format."""
    root = logging.getLogger()
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level)
