"""The real sidecar process scoring with a real (tiny, freshly trained) FastLogAD bundle."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.conftest import OtlpSink, SidecarProcess, shop_flow

pytestmark = pytest.mark.integration

NEVER_SEEN = "disk quota exceeded on data volume"


def attributes(message: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in message.attributes}


def send(target: str, traces: dict[int, list[str]]) -> int:
    provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=target, insecure=True)))
    logger = provider.get_logger("shop")
    n = 0
    for trace_id, messages in traces.items():
        context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id, 0x1000 + trace_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        for message in messages:
            logger.emit(body=message, context=context, attributes={"n": n})
            n += 1
    assert provider.force_flush(10_000)
    provider.shutdown()
    return n


@pytest.mark.parametrize("threshold", ["static", "dtpm"])
def test_fastlogad_bundle_scores_sessions_end_to_end(
    otlp_sink: OtlpSink, fastlogad_bundle: Path, sidecar_process: Any, threshold: str
) -> None:
    bundle_threshold = json.loads((fastlogad_bundle / "threshold.json").read_text())["threshold"]
    model_version = json.loads((fastlogad_bundle / "bundle.json").read_text())["model_version"]
    sidecar: SidecarProcess = sidecar_process({
        "forward": {"endpoint": otlp_sink.endpoint},
        "sessions": {"inactivity_timeout_s": 0.3},
        "scoring": {"bundle": str(fastlogad_bundle), "threshold": threshold, "batch_timeout_ms": 5},
    })
    rng = random.Random(1)
    traces = {i: shop_flow(rng, i % 2) for i in range(1, 5)}
    odd = shop_flow(rng, 0)
    traces[99] = odd[:2] + [NEVER_SEEN] + odd[2:]
    sent = send(sidecar.grpc_target, traces)

    received = otlp_sink.wait_for_records(sent)
    assert len(received) == sent
    for _, _, record in received:
        a = attributes(record)
        assert a["log.anomaly.status"] == "scored"
        assert (a["log.anomaly.model"], a["log.anomaly.model_version"]) == ("fastlogad", model_version)
        assert a["log.anomaly.score"] > 0
        if threshold == "static":
            assert a["log.anomaly.threshold"] == pytest.approx(bundle_threshold)
        trace_id = int.from_bytes(record.trace_id, "big")
        assert a["log.anomaly.session.length"] == len(traces[trace_id])
        # the model flags the key it never saw in training, and nothing in the normal flows
        assert a["log.anomaly.unexpected"] is (record.body.string_value == NEVER_SEEN)
        if trace_id != 99 and threshold == "static":
            assert a["log.anomaly.is_anomaly"] is False  # flows like the training data

    spans = {int.from_bytes(span.trace_id, "big"): span for _, span in otlp_sink.wait_for_spans(len(traces))}
    event = attributes(spans[99].events[0])
    assert [v.string_value for v in event["log.anomaly.unexpected_templates"].values] == [NEVER_SEEN]
    assert int.from_bytes(spans[99].parent_span_id, "big") == 0x1000 + 99
    assert sidecar.stop() == 0
