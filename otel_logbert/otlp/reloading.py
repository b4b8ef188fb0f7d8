"""opentelemetry-sdk exporters that follow rotated client TLS files (spans, OTLP metrics).

The SDK's OTLP exporters take their TLS material when they are built (gRPC: channel credentials) and
keep it for good. ``ReloadingSpanExporter`` / ``ReloadingMetricExporter`` hold one built by a factory
and, before each export, call ``ClientTls.refresh``: when the files changed (``generation`` moved on)
the old exporter is shut down and a new one is built with the new files. Exports of one exporter are
sequential (the batch span processor's and the periodic metric reader's thread), so no export runs
on the exporter being replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_logbert.otlp.tls import ClientTls

T = TypeVar("T")


class _Current(Generic[T]):  # T: an SDK exporter (has ``shutdown()``)
    """The exporter built by ``factory`` for ``tls``'s current files; ``get()`` rebuilds it after a rotation."""

    def __init__(self, factory: Callable[[], T], tls: ClientTls) -> None:
        self.factory = factory
        self.tls = tls
        self.exporter = factory()
        self.generation = tls.generation

    def get(self) -> T:
        self.tls.refresh()
        if self.generation != self.tls.generation:
            old, self.exporter = self.exporter, self.factory()
            self.generation = self.tls.generation
            old.shutdown()
        return self.exporter


class ReloadingSpanExporter(SpanExporter):
    """A span exporter from ``factory``, rebuilt when ``tls``'s files rotate."""

    def __init__(self, factory: Callable[[], SpanExporter], tls: ClientTls) -> None:
        self._current = _Current(factory, tls)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._current.get().export(spans)

    def shutdown(self) -> None:
        self._current.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._current.exporter.force_flush(timeout_millis)


class ReloadingMetricExporter(MetricExporter):
    """A metric exporter from ``factory``, rebuilt when ``tls``'s files rotate (same temporality and
    aggregation preferences as the exporter it wraps)."""

    def __init__(self, factory: Callable[[], MetricExporter], tls: ClientTls) -> None:
        self._current = _Current(factory, tls)
        inner = self._current.exporter
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self._current.get().export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._current.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._current.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


E = TypeVar("E")


def reloading(factory: Callable[[], E], tls: ClientTls | None, wrapper: Callable[[Callable[[], E], ClientTls], E]) -> E:
    """``factory()``'s exporter, wrapped in ``wrapper`` (``ReloadingSpanExporter`` /
    ``ReloadingMetricExporter``) when ``tls`` is on with files to follow. The first exporter is built
    here either way, so a ``UserError`` from its files is raised now."""
    if tls is not None and tls.enabled and (tls.config.ca_file or tls.config.cert_file):
        return wrapper(factory, tls)
    return factory()
