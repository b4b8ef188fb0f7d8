"""Sending simulated records the way instrumented services do: opentelemetry-sdk's OTLP log exporter.

Each service gets its own ``LoggerProvider`` (its resource carries ``service.name``), and each record
is emitted with the trace and span of its request as its context, so the exported ``LogRecord``s
carry ``trace_id`` / ``span_id`` like those of a service using the OTel logging bridge.

The providers share one ``BatchLogRecordProcessor`` and one stock ``OTLPLogExporter``, standing in
for the agent or Collector that merges the services' streams before the sidecar. The exporter groups
a batch by resource, so all of one service's lines of a request arrive before the next service's;
the sidecar puts each session back in timestamp order before scoring it (``sessions.order: time``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_logbert.progress import progress_bar
from otel_logbert.simulate import SERVICES, SEVERITY_NUMBERS, SimRecord

SERVICE_NAMESPACE = "shop"
SERVICE_VERSION = "1.4.2"
EXPORT_BATCH = 512
SCHEDULE_DELAY_MS = 20


@dataclass
class SendResult:
    """``sent``: records handed to the SDK; ``seconds``: from the first emit until the exporter
    flushed the last one; ``flushed``: the SDK's force_flush succeeded."""

    sent: int
    seconds: float
    flushed: bool
    started_at: float  # time.monotonic() of the first emit


def service_resource(service: str) -> Resource:
    return Resource.create({
        "service.name": service,
        "service.namespace": SERVICE_NAMESPACE,
        "service.version": SERVICE_VERSION,
        "deployment.environment.name": "demo",
    })


def send_records(records: Iterable[SimRecord], endpoint: str, total: int | None = None,
                 progress: bool = True, timeout_s: float = 120.0) -> SendResult:
    """Emit ``records`` in order through the OTel SDK and export them over OTLP/gRPC to ``endpoint``
    (``http://host:port``, plaintext). Blocks until the exporter flushed everything or ``timeout_s``
    passed (``flushed`` False). ``total`` sizes the SDK queue (it drops records when full) and the
    progress bar; give it when ``records`` is a generator."""
    records = list(records) if total is None else records
    n = total if total is not None else len(records)  # type: ignore[arg-type]
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=30)
    processor = BatchLogRecordProcessor(
        exporter,
        schedule_delay_millis=SCHEDULE_DELAY_MS,
        max_export_batch_size=EXPORT_BATCH,
        max_queue_size=max(2048, n + EXPORT_BATCH),  # never full: the SDK drops records when it is
        export_timeout_millis=30_000,
    )
    providers = {}
    loggers = {}
    for service in SERVICES:
        provider = LoggerProvider(resource=service_resource(service), shutdown_on_exit=False)
        provider.add_log_record_processor(processor)
        providers[service] = provider
        loggers[service] = provider.get_logger(f"{SERVICE_NAMESPACE}.{service}", SERVICE_VERSION)
    severities = {name: SeverityNumber(number) for name, number in SEVERITY_NUMBERS.items()}
    started = time.monotonic()
    sent = 0
    try:
        with progress_bar(total=n, desc="send (OTLP)", unit="rec", enabled=progress) as bar:
            for record in records:
                context = None
                if record.trace_id:
                    span = NonRecordingSpan(SpanContext(record.trace_id, record.span_id, is_remote=False,
                                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
                    context = trace.set_span_in_context(span)
                loggers[record.service].emit(
                    timestamp=record.time_unix_nano,
                    observed_timestamp=record.time_unix_nano,
                    context=context,
                    severity_number=severities[record.severity],
                    severity_text=record.severity,
                    body=record.body,
                )
                sent += 1
                if sent % 1000 == 0:
                    bar.update(1000)
            bar.update(sent % 1000)
        flushed = processor.force_flush(timeout_millis=int(timeout_s * 1000))
    finally:
        processor.shutdown()
    return SendResult(sent=sent, seconds=time.monotonic() - started, flushed=bool(flushed), started_at=started)

