"""Span events: the verdict of a trace-keyed session, inside its trace.

For every scored session keyed by trace id, ``SpanEmitter.emit`` builds a span named
``log.anomaly.session`` in the session's trace: parent = the span id of the session's first record
(the earliest, unless ``sessions.order: arrival``), else of the first that has one, start/end = the
first/last record timestamps, resource ``service.name = otel-logbert``.
It carries the verdict attributes and one event ``log.anomaly`` with score, threshold, is_anomaly,
model and the templates of the unexpected keys, so a trace viewer shows the verdict in the trace.

Spans are exported by opentelemetry-sdk's OTLP span exporter (gRPC or HTTP) through the SDK's
``BatchSpanProcessor`` (a worker thread, batches). Spans are derived data: when the exporter cannot
keep up, the oldest queued spans are dropped and counted (log records are never dropped for them).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otel_logbert import __version__
from otel_logbert.otlp.annotate import AttributeNames
from otel_logbert.otlp.endpoints import grpc_target, http_url
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.otlp.tls import ClientTls, sdk_exporter_options
from otel_logbert.sessions.session import Session, Verdict

log = logging.getLogger(__name__)

SPAN_NAME = "log.anomaly.session"
EVENT_NAME = "log.anomaly"
MAX_UNEXPECTED_TEMPLATES = 32
MAX_QUEUED_SPANS = 20_000
SPAN_BATCH_SIZE = 512
SPAN_EXPORT_INTERVAL_S = 0.2
RESOURCE = Resource.create({"service.name": "otel-logbert", "service.version": __version__})
SCOPE = InstrumentationScope("otel_logbert.sidecar", __version__)


def build_span(
    session: Session, verdict: Verdict, names: AttributeNames, unexpected_templates: Sequence[str]
) -> ReadableSpan:
    """The ``log.anomaly.session`` span of a scored, trace-keyed session."""
    trace_id = int.from_bytes(session.trace_id, "big")
    parent = None
    if len(session.span_id) == 8 and any(session.span_id):
        parent = SpanContext(
            trace_id,
            int.from_bytes(session.span_id, "big"),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    context = SpanContext(
        trace_id, random.getrandbits(64) or 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    now = time.time_ns()
    start = session.first_ts or now
    end = max(session.last_ts or now, start)
    verdict_attributes = {
        names.score: float(verdict.score or 0.0),
        names.threshold: float(verdict.threshold or 0.0),
        names.is_anomaly: bool(verdict.is_anomaly),
        names.model: verdict.model,
        names.model_version: verdict.model_version,
    }
    attributes = {
        **verdict_attributes,
        names.session_id: session.id,
        names.session_length: len(session.keys),
        f"{names.prefix}.service.name": session.service,
    }
    event = Event(
        EVENT_NAME,
        {**verdict_attributes, f"{names.prefix}.unexpected_templates": list(unexpected_templates)},
        timestamp=end,
    )
    return ReadableSpan(
        SPAN_NAME,
        context=context,
        parent=parent,
        resource=RESOURCE,
        attributes=attributes,
        events=[event],
        kind=SpanKind.INTERNAL,
        instrumentation_scope=SCOPE,
        start_time=start,
        end_time=end,
    )


def unexpected_templates(session: Session, verdict: Verdict, template_of: Callable[[str], str]) -> list[str]:
    """Distinct templates of the session's unexpected keys, in order, at most 32."""
    if not verdict.unexpected:
        return []
    seen: dict[str, None] = {}
    for key, flag in zip(session.keys, verdict.unexpected, strict=False):
        if flag:
            seen.setdefault(template_of(key), None)
            if len(seen) >= MAX_UNEXPECTED_TEMPLATES:
                break
    return list(seen)


class SpanEmitter:
    """Exports ``log.anomaly.session`` spans with opentelemetry-sdk's ``BatchSpanProcessor`` (its
    worker thread, queue and batching). Counts exported and failed spans in ``spans``
    (``outcome``); spans dropped because the queue was full are counted by the SDK's own
    ``otel.sdk.processor.span.processed`` metric (``error.type = queue_full``) on the same provider."""

    def __init__(
        self,
        exporter: SpanExporter,
        metrics: Metrics,
        *,
        max_queue: int = MAX_QUEUED_SPANS,
        batch_size: int = SPAN_BATCH_SIZE,
        interval_s: float = SPAN_EXPORT_INTERVAL_S,
    ) -> None:
        self._processor = BatchSpanProcessor(
            _CountingExporter(exporter, metrics),
            max_queue_size=max_queue,
            schedule_delay_millis=interval_s * 1000,
            max_export_batch_size=batch_size,
            meter_provider=metrics.provider,
        )

    def emit(self, span: ReadableSpan) -> None:
        """Queue one span (never blocks; drops the oldest queued span when full)."""
        self._processor.on_end(span)

    async def flush(self) -> None:
        """Export everything queued (in a worker thread, so the event loop keeps running)."""
        await asyncio.to_thread(self._processor.force_flush)

    def close(self) -> None:
        """Export what is left and shut the exporter down (blocking)."""
        self._processor.shutdown()


class _CountingExporter(SpanExporter):
    """Counts and logs each export's outcome, then hands the batch to the real exporter."""

    def __init__(self, exporter: SpanExporter, metrics: Metrics) -> None:
        self.exporter = exporter
        self.metrics = metrics

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # the SDK exporter should not raise; be safe anyway
            log.warning("span export raised", extra={"error": repr(exc)})
            result = SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            log.warning("span export failed; spans lost", extra={"spans": len(spans)})
        outcome = "exported" if result == SpanExportResult.SUCCESS else "failed"
        self.metrics.spans.add(len(spans), {"outcome": outcome})
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def build_span_exporter(
    endpoint: str, protocol: str, timeout_s: float, headers: dict[str, str], tls: ClientTls | None = None
) -> SpanExporter:
    """opentelemetry-sdk's OTLP span exporter for ``endpoint`` (``http(s)://host:port`` or ``host:port``)
    with ``tls`` (``otlp.tls.sdk_exporter_options``), rebuilt when its files rotate
    (``otlp.reloading``). Raises ``UserError``."""
    from otel_logbert.otlp.reloading import ReloadingSpanExporter, reloading

    return reloading(lambda: _span_exporter(endpoint, protocol, timeout_s, headers, tls), tls, ReloadingSpanExporter)


def _span_exporter(
    endpoint: str, protocol: str, timeout_s: float, headers: dict[str, str], tls: ClientTls | None
) -> SpanExporter:
    options = sdk_exporter_options(tls, endpoint, protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=grpc_target(endpoint)[0], timeout=timeout_s, headers=headers or None, **options
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(
        endpoint=http_url(endpoint, "/v1/traces", tls=tls is not None and tls.enabled),
        timeout=timeout_s,
        headers=headers or None,
        **options,
    )
