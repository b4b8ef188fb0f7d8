"""otlp.instruments (the metric table) and the ``Metrics`` object built from it; the OTLP metrics
export over HTTP when the sidecar forwards over HTTP (a real sidecar, a real aiohttp OTLP/HTTP server)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_logbert.config import config_from_dict
from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from otel_logbert.otlp.instruments import METRICS, MetricSpec
from otel_logbert.otlp.telemetry import Metrics, build_metric_exporter
from tests.conftest import running_sidecar, sidecar_config

SPECS = {m.name: m for m in METRICS}


def record_every_metric(metrics: Metrics) -> None:
    """One data point on every instrument of the table, with every attribute key it declares."""
    for spec in METRICS:
        attrs = {key: "x" for key in spec.attributes}
        if spec.kind == "counter":
            getattr(metrics, spec.attr).add(2, attrs)
        elif spec.kind == "histogram":
            getattr(metrics, spec.attr).record(0.01, attrs)
        else:
            metrics.gauges[spec.attr] = lambda: 7


def test_the_table_is_consistent() -> None:
    assert len(SPECS) == len(METRICS) and len({m.attr for m in METRICS}) == len(METRICS)
    for m in METRICS:
        assert m.name.startswith("otel_logbert.") and m.description and m.kind in ("counter", "histogram", "gauge")
        assert (m.buckets is not None) == (m.kind == "histogram"), m.name
        assert (m.unit == "") == (m.kind == "gauge"), m.name  # a gauge unit would rename its Prometheus series


def test_every_declared_metric_is_served_under_its_documented_prometheus_name() -> None:
    metrics = Metrics()
    record_every_metric(metrics)
    text = metrics.prometheus_text().decode()
    metrics.shutdown()
    served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")} - {"target_info"}
    assert served == {m.prometheus_name for m in METRICS}
    for m in METRICS:
        assert f"# HELP {m.prometheus_name} {m.description}" in text


def test_instruments_carry_the_table_kind_unit_and_description() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics([reader])
    record_every_metric(metrics)
    data = reader.get_metrics_data()
    seen = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    metrics.shutdown()
    assert set(seen) == set(SPECS)
    kinds = {"Sum": "counter", "Histogram": "histogram", "Gauge": "gauge"}
    for name, metric in seen.items():
        spec = SPECS[name]
        assert kinds[type(metric.data).__name__] == spec.kind, name
        assert metric.unit == spec.unit and metric.description == spec.description, name
        if spec.kind == "histogram":
            assert tuple(metric.data.data_points[0].explicit_bounds) == spec.buckets


def test_an_undeclared_metric_is_an_attribute_error() -> None:
    metrics = Metrics()
    with pytest.raises(AttributeError, match="no instrument 'records_recieved'.*instruments.py"):
        metrics.records_recieved.add(1)  # noqa: B018 - the typo is the point
    metrics.shutdown()


def test_prometheus_name_rules() -> None:
    assert MetricSpec("a", "otel_logbert.x.y", "counter", "{record}", "d").prometheus_name == "otel_logbert_x_y_total"
    assert MetricSpec("a", "otel_logbert.d", "histogram", "s", "d").prometheus_name == "otel_logbert_d_seconds"
    with pytest.raises(ValueError, match="unit 'ms'"):
        _ = MetricSpec("a", "otel_logbert.d", "histogram", "ms", "d").prometheus_name


@pytest.mark.parametrize(
    ("forward", "otlp", "exporter", "endpoint"),
    [
        ({"protocol": "grpc"}, {}, GrpcMetricExporter, None),
        ({"protocol": "http"}, {}, HttpMetricExporter, "http://fwd:4318/v1/metrics"),
        ({"protocol": "http"}, {"protocol": "grpc", "endpoint": "m:4317"}, GrpcMetricExporter, None),
        ({"protocol": "grpc"}, {"protocol": "http", "endpoint": "m:4318"}, HttpMetricExporter, "http://m:4318/v1/metrics"),
    ],
)
def test_metric_exporter_follows_the_resolved_protocol(forward: dict, otlp: dict, exporter: type,
                                                       endpoint: str | None) -> None:
    config = config_from_dict({"scoring": {"bundle": "/b"},
                               "forward": {"endpoint": "http://fwd:4318", **forward},
                               "telemetry": {"otlp_metrics": {"enabled": True, **otlp}}}, environ={})
    target = config.telemetry.otlp_metrics.target(config.forward)
    assert target is not None
    built = build_metric_exporter(*target, timeout_s=1.0, headers={})
    assert isinstance(built, exporter)
    if endpoint is not None:
        assert built._endpoint == endpoint  # the SDK keeps the URL it posts to only privately
    built.shutdown()


# --- a real sidecar exporting its metrics over OTLP/HTTP -------------------------------------------


class HttpOtlpServer:
    """A real OTLP/HTTP receiver (aiohttp) on its own thread and event loop, so that a synchronous
    exporter on the sidecar's loop (the last export at shutdown) cannot block it. Keeps every
    ``/v1/metrics`` request (headers and decoded body); accepts ``/v1/logs``."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, str], metrics_service_pb2.ExportMetricsServiceRequest]] = []
        self.logs = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HttpOtlpServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/metrics", self._on_metrics)
        app.router.add_post("/v1/logs", self._on_logs)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _on_metrics(self, request: web.Request) -> web.Response:
        body = metrics_service_pb2.ExportMetricsServiceRequest.FromString(await request.read())
        self.metrics.append((dict(request.headers), body))
        return web.Response(body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _on_logs(self, request: web.Request) -> web.Response:
        req = logs_service_pb2.ExportLogsServiceRequest.FromString(await request.read())
        self.logs += sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
        return web.Response(body=logs_service_pb2.ExportLogsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


@pytest.fixture
def http_otlp() -> Iterator[HttpOtlpServer]:
    with HttpOtlpServer() as server:
        yield server


def data_points(req: metrics_service_pb2.ExportMetricsServiceRequest) -> Iterator[tuple[str, Any]]:
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                yield from ((m.name, p) for p in getattr(m, kind).data_points)


def test_http_forwarding_sidecar_exports_its_metrics_over_http(http_otlp: HttpOtlpServer, rule_bundle: Path) -> None:
    config = sidecar_config(
        http_otlp.url, rule_bundle,
        forward={"protocol": "http", "headers": {"x-tenant": "t1"}},
        traces={"enabled": False},
        telemetry={"endpoint": None, "otlp_metrics": {"enabled": True, "interval_s": 0.2}},
    )
    received_total = 0.0

    async def scenario() -> None:
        nonlocal received_total
        async with running_sidecar(config) as sidecar:
            req = logs_service_pb2.ExportLogsServiceRequest()
            rl = req.resource_logs.add()
            rl.scope_logs.add().log_records.extend(
                [logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value=f"no trace {i}")) for i in range(3)])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports['grpc']}") as channel:
                await channel.unary_unary(LOGS_EXPORT_METHOD)(req.SerializeToString(), timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                received_total = max((p.as_int for _, body in http_otlp.metrics for name, p in data_points(body)
                                      if name == "otel_logbert.records.received"), default=0)
                if received_total >= 3 and http_otlp.logs >= 3:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert http_otlp.logs == 3  # the logs went over HTTP too
    assert received_total == 3
    headers, _ = http_otlp.metrics[0]
    assert headers["Content-Type"] == "application/x-protobuf" and headers["x-tenant"] == "t1"
    exported = set()
    for _, body in http_otlp.metrics:
        resource = {kv.key: kv.value.string_value for kv in body.resource_metrics[0].resource.attributes}
        assert resource["service.name"] == "otel-logbert"
        for name, point in data_points(body):
            exported.add(name)
            assert name in SPECS, name  # nothing undeclared is exported
            assert {kv.key for kv in point.attributes} <= set(SPECS[name].attributes), name
    assert {m.name for m in METRICS if m.kind == "gauge"} <= exported  # the sidecar feeds every gauge
