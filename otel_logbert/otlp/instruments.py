"""Every metric the sidecar records, declared once (in the spirit of the Collector's ``mdatagen``).

``METRICS`` is the single source: ``otlp.telemetry.Metrics`` builds one OpenTelemetry instrument per
entry (reachable as ``metrics.<attr>``; gauges are read through ``metrics.gauges[<gauge key>]``), and
``python -m otel_logbert.config_docs`` writes the metric table of ``docs/sidecar-config.md`` from it.
Adding a metric = adding a row here; nothing else lists them.

This module imports nothing heavy, so the docs generator can use it without the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "histogram", "gauge"]

PREFIX = "otel_logbert."

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


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``attr``: the ``Metrics`` attribute (counters, histograms) or the ``gauges`` key
    (gauges). ``attributes``: every attribute key a data point may carry (none other is recorded).
    ``buckets``: explicit histogram boundaries. Gauges carry no unit, so their Prometheus names stay
    unit-free."""

    attr: str
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The name behind ``GET /metrics`` (what the Prometheus exporter makes of ``name``/``unit``):
        dots -> underscores, unit ``s`` -> ``_seconds``, ``{...}`` units dropped, counters ``_total``."""
        base = self.name.replace(".", "_")
        if self.unit == "s":
            base += "_seconds"
        elif self.unit and not self.unit.startswith("{"):
            raise ValueError(f"{self.name}: unit {self.unit!r} has no Prometheus suffix rule here")
        return base + "_total" if self.kind == "counter" else base


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "records_received", "otel_logbert.records.received", "counter", "{record}", "Log records accepted",
        ("protocol",),
    ),
    MetricSpec(
        "records_forwarded", "otel_logbert.records.forwarded", "counter", "{record}",
        "Log records delivered downstream",
    ),
    MetricSpec(
        "records_dropped", "otel_logbert.records.dropped", "counter", "{record}",
        "Log records lost: permanent downstream errors, downstream partial success, shutdown", ("reason",),
    ),
    MetricSpec(
        "records_unsessioned", "otel_logbert.records.unsessioned", "counter", "{record}",
        "Records without a session key",
    ),
    MetricSpec(
        "requests_refused", "otel_logbert.requests.refused", "counter", "{request}",
        "Export requests answered with an error, by reason", ("protocol", "reason"),
    ),
    MetricSpec(
        "records_replayed", "otel_logbert.records.replayed", "counter", "{record}",
        "Records restored from the persistent queue at start; state in_flight: sent before the restart "
        "without an acknowledgement (possibly delivered twice), held: never sent", ("state",),
    ),
    MetricSpec(
        "records_possible_duplicates", "otel_logbert.records.possible_duplicates", "counter", "{record}",
        "Records sent again that may already have been delivered (delivery is at-least-once): cause retry, "
        "a re-send after a timeout or a connection lost mid-request; replay, records sent before a restart "
        "without their acknowledgement on disk. An upper bound on the duplicates downstream", ("cause",),
    ),
    MetricSpec(
        "connections_refused", "otel_logbert.connections.refused", "counter", "{connection}",
        "Connections closed on arrival (HTTP: past receivers.http.max_connections), by reason",
        ("protocol", "reason"),
    ),
    MetricSpec(
        "sessions_closed", "otel_logbert.sessions.closed", "counter", "{session}", "Sessions closed, by reason",
        ("reason",),
    ),
    MetricSpec("sessions_scored", "otel_logbert.sessions.scored", "counter", "{session}", "Sessions scored"),
    MetricSpec(
        "sessions_unscored", "otel_logbert.sessions.unscored", "counter", "{session}",
        "Sessions not scored, by outcome", ("outcome",),
    ),
    MetricSpec(
        "sessions_anomalous", "otel_logbert.sessions.anomalous", "counter", "{session}",
        "Scored sessions over threshold",
    ),
    MetricSpec(
        "forward_retries", "otel_logbert.forward.retries", "counter", "{request}",
        "Forward attempts that will be retried",
    ),
    MetricSpec("spans", "otel_logbert.spans", "counter", "{span}", "Anomaly spans, by outcome", ("outcome",)),
    MetricSpec(
        "scoring_duration", "otel_logbert.scoring.duration", "histogram", "s", "Time to score one batch part",
        ("outcome",), LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "verdict_latency", "otel_logbert.session.verdict_latency", "histogram", "s",
        "From session close to its verdict: waiting for a scoring batch, then scoring (part of forward_latency)",
        (), LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "forward_latency", "otel_logbert.session.forward_latency", "histogram", "s",
        "From session close to its records being acknowledged downstream", (), LATENCY_BUCKETS_S,
    ),
    MetricSpec("sessions.open", "otel_logbert.sessions.open", "gauge", "", "Open sessions"),
    MetricSpec("buffer.records", "otel_logbert.buffer.records", "gauge", "", "Log keys held by open sessions"),
    MetricSpec(
        "buffer.fill", "otel_logbert.buffer.fill", "gauge", "", "buffer.records / sessions.max_buffered_records"
    ),
    MetricSpec(
        "queue.records", "otel_logbert.queue.records", "gauge", "",
        "Records closed but not yet delivered (scoring + forward queue)",
    ),
    MetricSpec("queue.fill", "otel_logbert.queue.fill", "gauge", "", "queue.records / forward.queue_max_records"),
    MetricSpec(
        "persistence.bytes", "otel_logbert.persistence.bytes", "gauge", "",
        "Bytes of the persistent queue on disk (0 when off)",
    ),
    MetricSpec(
        "persistence.fill", "otel_logbert.persistence.fill", "gauge", "", "persistence.bytes / persistence.max_bytes",
    ),
    MetricSpec(
        "persistence.entries", "otel_logbert.persistence.entries", "gauge", "",
        "Requests in the persistent queue with records not yet delivered",
    ),
    MetricSpec(
        "scoring.cache.hit_rate", "otel_logbert.scoring.cache.hit_rate", "gauge", "",
        "Share of sessions answered by the verdict cache since start (all lanes; 0 when off)",
    ),
    MetricSpec(
        "scoring.cache.entries", "otel_logbert.scoring.cache.entries", "gauge", "",
        "Distinct key sequences held by the verdict caches (all lanes)",
    ),
)
