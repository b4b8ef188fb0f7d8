"""otlp.telemetry (structured logs, metrics) and otlp.spans (span construction)."""

from __future__ import annotations

import json
import logging

from otel_logbert.otlp.annotate import AttributeNames
from otel_logbert.otlp.spans import build_span, unexpected_templates
from otel_logbert.otlp.telemetry import JsonFormatter, Metrics, TextFormatter
from otel_logbert.sessions.session import Session, Verdict
from tests.conftest import prometheus_value


def record(**extra: object) -> logging.LogRecord:
    r = logging.LogRecord("otel_logbert.x", logging.WARNING, __file__, 1, "forwarding %s", ("failed",), None)
    for key, value in extra.items():
        setattr(r, key, value)
    return r


def test_json_log_lines_carry_extra_fields() -> None:
    line = JsonFormatter().format(record(records=12, error="UNAVAILABLE: down"))
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["message"] == "forwarding failed"
    assert entry["records"] == 12 and entry["error"] == "UNAVAILABLE: down"
    assert entry["logger"] == "otel_logbert.x" and entry["time"].endswith("Z")
    assert "\n" not in line


def test_text_log_lines_append_extra_fields() -> None:
    assert TextFormatter().format(record(records=3)).endswith("forwarding failed records=3")


def test_metrics_render_as_prometheus_with_gauges() -> None:
    metrics = Metrics()
    metrics.records_received.add(5, {"protocol": "http"})
    metrics.scoring_duration.record(0.012, {"outcome": "scored"})
    metrics.gauges["sessions.open"] = lambda: 42
    text = metrics.prometheus_text().decode()
    assert prometheus_value(text, "otel_logbert_records_received_total", protocol="http") == 5
    assert prometheus_value(text, "otel_logbert_scoring_duration_seconds_bucket", le="0.015") == 1
    assert prometheus_value(text, "otel_logbert_scoring_duration_seconds_bucket", le="0.01") == 0
    assert prometheus_value(text, "otel_logbert_sessions_open") == 42
    metrics.shutdown()


def session(span_id: bytes) -> Session:
    s = Session(key=b"t", serial=1, lane=0, now=0.0)
    s.label, s.trace_id, s.span_id, s.service = "t", bytes(range(16)), span_id, "cart"
    s.keys, s.first_ts, s.last_ts = ["1", "2", "1", "3"], 100, 90  # out-of-order timestamps
    return s


def test_span_without_a_parent_span_id_is_a_root_in_the_trace() -> None:
    verdict = Verdict("scored", "m", "1", score=0.1, threshold=0.5, is_anomaly=False)
    span = build_span(session(b""), verdict, AttributeNames(), [])
    assert span.parent is None
    assert span.context.trace_id == int.from_bytes(bytes(range(16)), "big")
    assert span.start_time == 100 and span.end_time == 100  # never ends before it starts
    assert span.attributes["log.anomaly.service.name"] == "cart"


def test_unexpected_templates_are_distinct_and_in_order() -> None:
    verdict = Verdict("scored", unexpected=(True, True, True, False))
    templates = unexpected_templates(session(b"\x01" * 8), verdict, lambda key: f"template {key}")
    assert templates == ["template 1", "template 2"]
    assert unexpected_templates(session(b""), Verdict("scored"), str) == []
