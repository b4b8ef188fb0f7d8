"""Shared fixtures: free localhost ports, a real downstream OTLP receiver, small model bundles, and a
real ``otel-logbert serve`` process.

Sections (add new shared fixtures under the matching one):

- ports: ``free_port()``
- downstream: ``OtlpSink`` / ``otlp_sink`` - the demo's ``OtlpReceiver`` (LogsService, TraceService) plus MetricsService
- bundles: ``make_rule_bundle`` / ``rule_bundle`` / ``broken_bundle`` - bundles whose ``model.onnx`` is a
  hand-built ONNX graph (score 1 when a session holds a key unknown to the vocabulary, else 0). They
  exercise the real bundle loader and ONNX Runtime scorer without training anything.
  ``fastlogad_bundle`` - a real FastLogAD bundle trained in a few seconds on ``shop_flow`` sessions
  (needs torch).
- in-process: ``sidecar_config`` / ``running_sidecar`` - a ``Sidecar`` on the test's event loop
- processes: ``SidecarProcess`` / ``sidecar_process`` - the real CLI in a subprocess
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.demo.receiver import OtlpReceiver

REPO_ROOT = Path(__file__).resolve().parent.parent

# --- ports ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` in Prometheus exposition ``text`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# --- downstream -------------------------------------------------------------------------------------

# The attribute keys the sidecar writes with the default ``attributes:`` config (prefix with its dot,
# the template attribute): what a record carries downstream beyond its own attributes.
OWNED = ("log.anomaly.", "log.record.template")


class OtlpSink(OtlpReceiver):
    """The demo's ``OtlpReceiver`` (logs, traces) plus metrics, on a fixed free port, for tests.

    ``fail_next(n, code)`` makes the next ``n`` log exports fail with ``code`` (nothing is kept);
    ``attempts`` counts log exports, failed ones included. ``stop()`` / ``start()`` take it down at
    once and bring it back on the same port. A log request with invalid UTF-8 in a string (which the
    Collector's own receiver accepts) is kept as bytes in ``invalid_utf8`` instead of failing.
    """

    def __init__(self, port: int | None = None, server_credentials: grpc.ServerCredentials | None = None) -> None:
        """``server_credentials``: listen with TLS (``grpc.ssl_server_credentials``) instead of plaintext."""
        super().__init__("127.0.0.1", port or free_port(), max_message_bytes=-1)
        self.server_credentials = server_credentials
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.attempts = 0
        self.invalid_utf8: list[bytes] = []
        self._failures: list[grpc.StatusCode] = []

    def start(self) -> OtlpSink:
        super().start()
        return self

    def stop(self, grace_s: float = 0.0) -> None:
        super().stop(grace_s)

    def _bind(self, server: grpc.Server, address: str) -> int:
        if self.server_credentials is None:
            return super()._bind(server, address)
        return server.add_secure_port(address, self.server_credentials)

    def _register(self, server: grpc.Server) -> None:
        super()._register(server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)

    def _decode_logs(self, body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
        try:
            return super()._decode_logs(body)
        except DecodeError:
            with self._changed:
                self.invalid_utf8.append(body)
            return logs_service_pb2.ExportLogsServiceRequest()

    def _export_logs(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._changed:
            self.attempts += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            context.abort(failure, "test sink told to fail")
        return super()._export_logs(request, context)

    def fail_next(self, n: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        with self._changed:
            self._failures.extend([code] * n)

    def wait_for_records(self, n: int, timeout_s: float = 15.0) -> list[tuple[Any, Any, Any]]:
        """Wait until at least ``n`` records arrived; returns them all (fails the test on timeout)."""
        self.wait_until_records(n, timeout_s)
        records = self.records()
        assert len(records) >= n, f"downstream got {len(records)} records, expected {n}"
        return records

    def wait_for_spans(self, n: int, timeout_s: float = 15.0) -> list[tuple[Any, Any]]:
        """Wait until at least ``n`` spans arrived; returns them all (fails the test on timeout)."""
        self.wait_until_spans(n, timeout_s)
        spans = self.spans()
        assert len(spans) >= n, f"downstream got {len(spans)} spans, expected {n}"
        return spans


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, owner: OtlpSink) -> None:
        self.owner = owner

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        with self.owner._changed:
            self.owner.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink().start()
    yield sink
    sink.stop()


# --- bundles ----------------------------------------------------------------------------------------

NORMAL_MESSAGES = (
    "Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010",
    "PacketResponder 1 for block blk_1 terminating",
    "Received block blk_1 of size 67108864 from /10.0.0.1",
    "user 42 logged in from 10.1.2.3",
    "order 7 created for user 42",
    "payment accepted for order 7",
)


TRACES_PER_REQUEST = 10
RECORDS_PER_TRACE = 5


def export_request(n: int) -> tuple[bytes, list[str]]:
    """Request ``n``: ten new traces of five records (``NORMAL_MESSAGES``), each record with a unique
    ``test.id``; with the ids. Request ``n``'s trace ids follow request ``n - 1``'s."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "checkout"
    sl = rl.scope_logs.add()
    sl.scope.name = "shop"
    ids = []
    for t in range(TRACES_PER_REQUEST):
        trace_id = (n * TRACES_PER_REQUEST + t + 1).to_bytes(16, "big")
        for r in range(RECORDS_PER_TRACE):
            record_id = f"{n}-{t}-{r}"
            ids.append(record_id)
            sl.log_records.append(logs_pb2.LogRecord(
                time_unix_nano=1_700_000_000_000_000_000 + n * 1000 + t * 10 + r, trace_id=trace_id,
                span_id=b"\x01" * 8, body=common_pb2.AnyValue(string_value=NORMAL_MESSAGES[r]),
                attributes=[common_pb2.KeyValue(key="test.id", value=common_pb2.AnyValue(string_value=record_id))],
            ))
    return request.SerializeToString(), ids


def make_rule_bundle(out: Path, normal_messages: tuple[str, ...] = NORMAL_MESSAGES, broken: bool = False) -> Path:
    """A bundle at ``out`` whose vocabulary and Drain3 state come from ``normal_messages`` and whose
    ONNX graph scores 1.0 for a session holding an unknown key (UNK) and 0.0 otherwise, with
    evidence 1.0 on the UNK positions; threshold 0.5. ``broken=True``: a graph that loads but fails
    on every run (an out-of-range Gather), for fail-open tests."""
    import onnx
    from onnx import TensorProto, helper

    from otel_logbert.bundle import Bundle, save_bundle
    from otel_logbert.parsing.drain import LogParser
    from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary

    parser = LogParser()
    keys = [parser.parse(m).key for m in normal_messages]
    bundle = Bundle(
        path=out, model="fastlogad", model_version="rule-1", config={"max_len": 64},
        vocab=Vocabulary.from_sessions([keys]), threshold={"threshold": 0.5, "method": "test rule"},
        metadata={"note": "hand-built ONNX rule for tests"}, drain_state=parser.to_json(),
    )
    save_bundle(bundle)
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    evidence = helper.make_tensor_value_info("evidence", TensorProto.FLOAT, ["batch", "seq"])
    nodes = [
        helper.make_node("Constant", [], ["unk"], value=helper.make_tensor("u", TensorProto.INT64, [], [UNK_ID])),
        helper.make_node("Equal", ["tokens", "unk"], ["is_unk"]),
        helper.make_node("Cast", ["is_unk"], ["evidence"], to=TensorProto.FLOAT),
    ]
    if broken:
        nodes += [
            helper.make_node("ReduceMax", ["tokens"], ["top"], axes=[1], keepdims=0),
            helper.make_node("Constant", [], ["far"], value=helper.make_tensor("f", TensorProto.INT64, [], [10**6])),
            helper.make_node("Add", ["top", "far"], ["index"]),
            helper.make_node("Constant", [], ["table"], value=helper.make_tensor("t", TensorProto.FLOAT, [2], [0, 1])),
            helper.make_node("Gather", ["table", "index"], ["score"]),
        ]
    else:
        nodes.append(helper.make_node("ReduceMax", ["evidence"], ["score"], axes=[1], keepdims=0))
    graph = helper.make_graph(nodes, "rule", [tokens], [score, evidence])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(bundle.onnx_path))
    return out


def shop_flow(rng: random.Random, kind: int) -> list[str]:
    """One normal session of a small shop: a checkout (kind 0) or a browse (kind 1)."""
    user, order = rng.randint(1, 999), rng.randint(1000, 9999)
    login = f"user {user} logged in from 10.1.2.{rng.randint(1, 250)}"
    if kind == 0:
        return [login, f"cart of user {user} has {rng.randint(1, 9)} items", f"order {order} created for user {user}",
                f"payment accepted for order {order}", f"order {order} shipped to user {user}"]
    return [login, f"search for shoes returned {rng.randint(0, 99)} results", f"user {user} logged out"]


@pytest.fixture(scope="session")
def fastlogad_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FastLogAD bundle trained by ``otel-logbert train`` on 200 ``shop_flow`` sessions, the way an
    operator would after learn mode: a file of key lines plus the parser state, which goes into the
    bundle as ``drain3.json``. Trained in a subprocess (a few seconds; needs torch), which also keeps
    torch's imports away from the test session's ``sys.path``."""
    pytest.importorskip("torch")
    from otel_logbert.bundle import DRAIN_FILE, write_json
    from otel_logbert.parsing.drain import LogParser

    work = tmp_path_factory.mktemp("bundles")
    rng = random.Random(0)
    parser = LogParser()
    sessions = [[parser.parse(message).key for message in shop_flow(rng, i % 2)] for i in range(200)]
    (work / "sessions.txt").write_text("".join(" ".join(keys) + "\n" for keys in sessions))
    out = work / "fastlogad"
    subprocess.run(
        [sys.executable, "-m", "otel_logbert.cli", "train", "--model", "fastlogad", "--train",
         str(work / "sessions.txt"), "--out", str(out), "--epochs", "3", "--seed", "0", "--quiet"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True, capture_output=True,
    )
    write_json(out / DRAIN_FILE, parser.to_json())
    return out


@pytest.fixture(scope="session")
def rule_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rule_bundle(tmp_path_factory.mktemp("bundles") / "rule")


@pytest.fixture(scope="session")
def broken_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rule_bundle(tmp_path_factory.mktemp("bundles") / "broken", broken=True)


# --- in-process ---------------------------------------------------------------------------------


def sidecar_config(forward_to: str, bundle: Path | None = None, **sections: dict[str, Any]) -> dict[str, Any]:
    """A sidecar config dict on ephemeral localhost ports, forwarding to ``forward_to``, with short
    session timeouts; ``sections`` are merged over it section by section (without ``bundle``, give
    a ``learn`` section for learn-only mode)."""
    config: dict[str, Any] = {
        "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
        "forward": {"endpoint": forward_to, "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2}},
        "sessions": {"inactivity_timeout_s": 0.2},
        "scoring": {"bundle": str(bundle) if bundle else None, "batch_timeout_ms": 5},
        "telemetry": {"endpoint": "127.0.0.1:0", "log_format": "text"},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


@contextlib.asynccontextmanager
async def running_sidecar(config: dict[str, Any], **kwargs: Any) -> AsyncIterator[Any]:
    """A started ``Sidecar`` (``kwargs`` go to its constructor); stopped (flushed) on exit."""
    from otel_logbert.config import config_from_dict
    from otel_logbert.sidecar.app import Sidecar

    sidecar = Sidecar(config_from_dict(config, environ={}), **kwargs)
    await sidecar.start()
    try:
        yield sidecar
    finally:
        await sidecar.stop()


# --- processes --------------------------------------------------------------------------------------


class SidecarProcess:
    """``otel-logbert <command> --config <yaml>`` in a subprocess, on free localhost ports.

    ``config`` is the YAML as a dict; receivers and telemetry endpoints are filled in with free
    ports unless given. ``start()`` waits for ``/readyz``; ``stop()`` sends SIGTERM and waits.
    ``program``: the command line before ``--config`` instead of this interpreter running the
    repository's CLI ``command`` (an installed ``otel-logbert serve``, a container); it then runs
    without the repository on ``PYTHONPATH``.
    """

    def __init__(self, config: dict[str, Any], workdir: Path, command: str = "serve",
                 extra_args: tuple[str, ...] = (), program: tuple[str, ...] | None = None) -> None:
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        receivers = config.setdefault("receivers", {})
        grpc_receiver = receivers["grpc"] = dict(receivers.get("grpc") or {})
        http_receiver = receivers["http"] = dict(receivers.get("http") or {})
        grpc_receiver.setdefault("endpoint", f"127.0.0.1:{free_port()}")
        http_receiver.setdefault("endpoint", f"127.0.0.1:{free_port()}")
        telemetry = config.setdefault("telemetry", {})
        telemetry.setdefault("endpoint", f"127.0.0.1:{free_port()}")
        self.grpc_port = _port(grpc_receiver["endpoint"])
        self.http_port = _port(http_receiver["endpoint"])
        self.telemetry_port = _port(telemetry["endpoint"])
        self.config_path = workdir / f"sidecar-{self.grpc_port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stdout_path = workdir / f"sidecar-{self.grpc_port}.out"
        self.stderr_path = workdir / f"sidecar-{self.grpc_port}.err"
        self.from_repo = program is None
        program = (sys.executable, "-m", "otel_logbert.cli", command) if program is None else program
        self.args = [*program, "--config", str(self.config_path), *extra_args]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def spawn(self) -> SidecarProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_") and (self.from_repo or k != "PYTHONPATH")}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            cwd = REPO_ROOT if self.from_repo else self.config_path.parent
            self.process = subprocess.Popen(self.args, cwd=cwd, env=env, stdout=out, stderr=err)
        return self

    def start(self, timeout_s: float = 30.0) -> SidecarProcess:
        self.spawn()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"sidecar exited with {self.process.returncode}: {self.stderr()}")
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"sidecar not ready after {timeout_s}s: {self.stderr()}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        return prometheus_value(self.get("/metrics")[1], name, **labels)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


def _port(endpoint: str | None) -> int:
    return int(endpoint.rsplit(":", 1)[1]) if endpoint else 0


@pytest.fixture
def sidecar_process(tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    """Factory: ``sidecar_process(config_dict, start=True)``; every process is stopped at teardown."""
    started: list[SidecarProcess] = []

    def make(config: dict[str, Any], start: bool = True, **kwargs: Any) -> SidecarProcess:
        process = SidecarProcess(config, tmp_path, **kwargs)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        if process.process is not None:
            process.stop()
