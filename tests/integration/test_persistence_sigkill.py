"""The persistent queue against a crash: the real ``otel-logbert serve`` process SIGKILLed mid-stream
and started again on the same directory, an OTLP/gRPC sender that keeps every acknowledged record id,
and a real downstream receiver (``conftest.OtlpSink``) that counts what arrives."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from tests.conftest import OtlpSink, SidecarProcess, export_request

pytestmark = pytest.mark.integration

class Sender(threading.Thread):
    """Sends requests one after another at ``per_s`` requests/s until stopped or refused for good;
    ``acknowledged`` holds the ids of every record whose request was answered OK."""

    def __init__(self, target: str, per_s: float) -> None:
        super().__init__(daemon=True)
        self.target, self.per_s = target, per_s
        self.acknowledged: list[str] = []
        self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        channel = grpc.insecure_channel(self.target)
        call = channel.unary_unary(LOGS_EXPORT_METHOD)
        started, n = time.monotonic(), 0
        while not self.stopping.is_set():
            body, ids = export_request(n)
            try:
                call(body, timeout=5)
                self.acknowledged.extend(ids)
            except grpc.RpcError:
                self.failed += 1
                if self.failed > 3:
                    break
            n += 1
            self.stopping.wait(max(0.0, started + n / self.per_s - time.monotonic()))
        channel.close()


def delivered_ids(sink: OtlpSink) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, _, record in sink.records():
        attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}
        out.append((attrs["test.id"], attrs))
    return out


def test_sigkill_mid_stream_then_restart_delivers_every_acknowledged_record(
    otlp_sink: OtlpSink, rule_bundle: Path, sidecar_process: Any, tmp_path: Path
) -> None:
    queue = tmp_path / "queue"
    config = {
        "forward": {"endpoint": otlp_sink.endpoint, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5}},
        "sessions": {"inactivity_timeout_s": 1.0, "max_age_s": 30},
        "scoring": {"bundle": str(rule_bundle), "batch_timeout_ms": 5},
        "telemetry": {"log_format": "json"},
        "persistence": {"directory": str(queue), "max_bytes": 64 << 20, "segment_bytes": 256 << 10},
    }
    first: SidecarProcess = sidecar_process(config)
    sender = Sender(first.grpc_target, per_s=40)  # 2,000 records/s
    sender.start()
    deadline = time.monotonic() + 20
    while len(otlp_sink.records()) < 2000 and time.monotonic() < deadline:  # some delivered, more held
        time.sleep(0.05)
    assert first.process is not None
    first.process.kill()
    first.process.wait(10)
    sender.join(10)
    acknowledged = set(sender.acknowledged)
    before_restart = len(otlp_sink.records())
    assert len(acknowledged) == len(sender.acknowledged) > before_restart  # records were held at the kill

    second: SidecarProcess = sidecar_process(config)
    deadline = time.monotonic() + 30
    while not acknowledged <= {i for i, _ in delivered_ids(otlp_sink)} and time.monotonic() < deadline:
        time.sleep(0.1)
    deliveries = delivered_ids(otlp_sink)
    counts = Counter(i for i, _ in deliveries)
    lost = acknowledged - set(counts)
    duplicated = sum(n - 1 for n in counts.values())
    replayed_held = second.metric("otel_logbert_records_replayed_total", state="held")
    replayed_in_flight = second.metric("otel_logbert_records_replayed_total", state="in_flight")

    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged records lost"
    assert replayed_held > 0  # the kill did catch records in open sessions
    assert duplicated <= replayed_in_flight  # a duplicate is only ever a record sent without its ack on disk
    assert second.metric("otel_logbert_records_possible_duplicates_total", cause="replay") == replayed_in_flight
    assert duplicated <= second.metric("otel_logbert_records_possible_duplicates_total")  # counted, never more
    restored = [attrs for i, attrs in deliveries[before_restart:] if attrs.get("log.anomaly.reason") == "restart"]
    assert restored and all(a["log.anomaly.status"] == "scored" for a in restored)

    deadline = time.monotonic() + 10  # delivered entries leave the log: the old segments are deleted
    while second.metric("otel_logbert_persistence_entries") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert second.metric("otel_logbert_persistence_entries") == 0
    assert len(list(queue.glob("wal-*.log"))) <= 2
    print(f"acknowledged={len(acknowledged)} delivered_unique={len(counts)} lost={len(lost)} "
          f"duplicated={duplicated} replayed_held={replayed_held:.0f} replayed_in_flight={replayed_in_flight:.0f}")
