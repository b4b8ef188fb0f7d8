"""The sidecar's own telemetry: metrics, health endpoints, structured logs.

Metrics are OpenTelemetry SDK instruments (``Metrics``, built from the table in
``otlp/instruments.py``), read two ways: a Prometheus reader behind
``GET /metrics`` (names like ``otel_logbert_records_received_total``) and, when
``telemetry.otlp_metrics.enabled``, a periodic OTLP exporter (gRPC or HTTP, see
``telemetry.otlp_metrics.protocol``). ``TelemetryServer`` serves
``/healthz`` (200 while the process runs), ``/readyz`` (200 once receivers listen and every scorer
is ready, 503 otherwise and while shutting down) and ``/metrics``. ``JsonFormatter`` writes one JSON
object per log line, with the ``extra`` fields of the call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from otel_logbert import __version__
from otel_logbert.otlp.endpoints import grpc_target, http_url
from otel_logbert.otlp.instruments import METRICS
from otel_logbert.otlp.tls import ClientTls, ServerTls, sdk_exporter_options

if TYPE_CHECKING:
    from otel_logbert.config import SidecarConfig

class Metrics:
    """Every instrument of ``otlp.instruments.METRICS``, built from that table: counters and
    histograms as attributes (``metrics.records_received.add(1, {"protocol": "grpc"})``), gauges read
    at collection time from ``gauges[<key>]`` (callables the sidecar sets once its parts exist; a
    gauge without one reports nothing). A Prometheus reader always backs ``prometheus_text()``;
    ``readers`` adds others (``from_config``: the periodic OTLP exporter)."""

    def __init__(self, readers: Sequence[MetricReader] = ()) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        self.registry = CollectorRegistry()
        resource = Resource.create({"service.name": "otel-logbert", "service.version": __version__})
        self.provider = MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self.registry), *readers], resource=resource
        )
        meter = self.provider.get_meter("otel_logbert.sidecar", __version__)
        self.gauges: dict[str, Callable[[], float]] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                setattr(self, spec.attr, meter.create_counter(spec.name, spec.unit, spec.description))
            elif spec.kind == "histogram":
                instrument = meter.create_histogram(
                    spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets
                )
                setattr(self, spec.attr, instrument)
            else:
                meter.create_observable_gauge(
                    spec.name, [self._gauge_callback(spec.attr)], spec.unit, spec.description
                )

    @classmethod
    def from_config(cls, config: SidecarConfig) -> Metrics:
        """The sidecar's metrics: Prometheus, plus OTLP export every ``telemetry.otlp_metrics.interval_s``
        to ``OtlpMetricsConfig.target`` when enabled (with ``forward``'s timeout and headers)."""
        otlp = config.telemetry.otlp_metrics
        target = otlp.target(config.forward)
        if target is None:
            return cls()
        endpoint, protocol = target
        f = config.forward
        # telemetry.otlp_metrics.endpoint comes with its tls; without it metrics go where logs go, with forward.tls.
        tls = ClientTls(otlp.tls, endpoint, "telemetry.otlp_metrics.tls") if otlp.endpoint else ClientTls(
            f.tls, endpoint, "forward.tls")
        exporter = build_metric_exporter(endpoint, protocol, f.timeout_s, f.headers, tls)
        return cls([PeriodicExportingMetricReader(exporter, export_interval_millis=otlp.interval_s * 1000)])

    def __getattr__(self, name: str) -> Any:
        """Only reached for names that are not instruments (those are set in ``__init__``)."""
        raise AttributeError(f"Metrics has no instrument {name!r} (metrics are declared in otlp/instruments.py)")

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            read = self.gauges.get(name)
            return [Observation(float(read()))] if read is not None else []

        return callback

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush the OTLP exporter (a last export) and stop every reader."""
        self.provider.shutdown()


def build_metric_exporter(
    endpoint: str, protocol: str, timeout_s: float, headers: dict[str, str], tls: ClientTls | None = None
) -> MetricExporter:
    """opentelemetry-sdk's OTLP metric exporter for ``endpoint`` (``http(s)://host:port`` or
    ``host:port``): gRPC ``MetricsService/Export``, or for ``protocol == "http"`` protobuf posted to
    ``<endpoint>/v1/metrics``; TLS from ``tls`` (``otlp.tls.sdk_exporter_options``), rebuilt when its
    files rotate (``otlp.reloading``)."""
    from otel_logbert.otlp.reloading import ReloadingMetricExporter, reloading

    return reloading(lambda: _metric_exporter(endpoint, protocol, timeout_s, headers, tls), tls,
                     ReloadingMetricExporter)


def _metric_exporter(
    endpoint: str, protocol: str, timeout_s: float, headers: dict[str, str], tls: ClientTls | None
) -> MetricExporter:
    options = sdk_exporter_options(tls, endpoint, protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        return GrpcExporter(
            endpoint=grpc_target(endpoint)[0], timeout=timeout_s, headers=headers or None, **options
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter(
        endpoint=http_url(endpoint, "/v1/metrics", tls=tls is not None and tls.enabled),
        timeout=timeout_s,
        headers=headers or None,
        **options,
    )


class TelemetryServer:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``telemetry.endpoint``."""

    def __init__(self, metrics: Metrics, ready: Callable[[], tuple[bool, str]], tls: ServerTls | None = None) -> None:
        """``tls``: serve HTTPS with these files (reloaded on change, as on the receivers)."""
        self.metrics = metrics
        self.ready = ready
        self.tls = tls
        self.port = 0  # the bound port once started
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ssl_context = self.tls.ssl_context() if self.tls is not None else None
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
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
