"""Fault injection against real sidecar processes: every record counted from sender to downstream.

Each scenario starts real ``otel-logbert serve`` processes (``tests.conftest.SidecarProcess``: the
repository's CLI with a YAML config, embedded ONNX Runtime, the tests' hand-built rule bundle) in
front of a real downstream OTLP/gRPC receiver in this process (``tests.conftest.OtlpSink``), all on
127.0.0.1. Senders send OTLP/gRPC requests of 50 records (10 new traces of 5) at a fixed rate, each
record with a unique ``test.id``, and retry a refused or failed request after a short pause, as the
Collector's sending queue does; a record is *acknowledged* once its request was answered OK. Then
the run waits (bounded) until every acknowledged record arrived or nothing arrived for a while.

Per scenario, one Markdown table row: records sent (offered, once each), acknowledged, delivered
(acknowledged records that arrived), lost (acknowledged, never arrived), duplicated (extra arrivals),
the sidecar's peak RSS (``VmHWM``, over every process of the scenario), whether it is healthy
afterwards (``/healthz`` and ``/readyz`` 200 and a fresh request delivered), and a note.

Scenarios (``--only`` picks some): baseline; downstream down mid-stream; a downstream slower than
``forward.timeout_s`` for a while (duplicates, counted); Triton killed mid-stream and started again
(the python-backend tritonserver of the tests); SIGTERM mid-stream (then
restart); SIGKILL mid-stream without and with the persistent queue (then restart on the same
directory); 2x the sustainable rate from four senders (the rate measured first with unthrottled
senders); the persistent queue at ``max_bytes`` while the downstream is down (back-pressure);
mutated requests (random byte flips of valid protobuf, random JSON) at both receivers; wrong bearer
tokens at both receivers; TLS handshakes with wrong certificates (mTLS on both receivers).

Usage::

    python benchmarks/chaos.py [--quick | --scale 1.0] [--rate 1000] [--only NAME ...] [--out FILE]

``--scale 1`` (the default) is the full run: 20 s streams, the downstream down for 60 s, 2x overload
for 60 s, 10,000 mutated requests: about 10 minutes. ``--quick`` is ``--scale 0.1`` (with floors).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc: no log line per refused handshake
import grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD, decode_protobuf  # noqa: E402
from tests.conftest import NORMAL_MESSAGES, OtlpSink, SidecarProcess, make_rule_bundle  # noqa: E402
from tests.tls_certs import Authority, Issued  # noqa: E402

TRACES, PER_TRACE = 10, 5
RECORDS_PER_REQUEST = TRACES * PER_TRACE
PROTOBUF = "application/x-protobuf"
TOKEN = "chaos-token-0123456789"
RETRY_PAUSE_S = 0.2  # a sender's pause before it sends a refused or failed request again


def export_request(prefix: str, n: int) -> tuple[bytes, list[str]]:
    """Request ``n`` of sender ``prefix``: ten new traces (ids unique per sender) of five records, each
    record with a unique ``test.id`` ``<prefix>-<n>-<trace>-<record>``."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "checkout"
    sl = rl.scope_logs.add()
    salt = int.from_bytes(prefix.encode()[-8:].rjust(8, b"\0"), "big")
    ids = []
    for t in range(TRACES):
        trace_id = (salt << 64 | n * TRACES + t + 1).to_bytes(16, "big")
        for r in range(PER_TRACE):
            record_id = f"{prefix}-{n}-{t}-{r}"
            ids.append(record_id)
            sl.log_records.append(logs_pb2.LogRecord(
                time_unix_nano=time.time_ns(), trace_id=trace_id, span_id=b"\x01" * 8,
                body=common_pb2.AnyValue(string_value=NORMAL_MESSAGES[r]),
                attributes=[common_pb2.KeyValue(key="test.id", value=common_pb2.AnyValue(string_value=record_id))],
            ))
    return request.SerializeToString(), ids


@dataclass
class Durations:
    """Every time bound of a run, from ``--scale``."""

    stream_s: float
    outage_s: float
    overload_s: float
    probe_s: float
    mutations: int
    settle_s: float  # at most this long for acknowledged records to arrive after the stream
    quiet_s: float  # ... or until nothing arrived for this long

    @classmethod
    def scaled(cls, scale: float) -> Durations:
        return cls(stream_s=max(6.0, 20 * scale), outage_s=max(4.0, 60 * scale), overload_s=max(6.0, 60 * scale),
                   probe_s=max(3.0, 5 * scale), mutations=max(400, int(10_000 * scale)),
                   settle_s=max(30.0, 60 * scale), quiet_s=4.0)


@dataclass
class Client:
    """How a sender reaches the sidecar's gRPC port: credentials (None: plaintext) and metadata."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, self.credentials)


class Sender(threading.Thread):
    """Sends request after request at ``records_per_s`` (unthrottled when 0) until ``stop()``; a
    failed request is sent again after ``RETRY_PAUSE_S`` until it is answered OK or the sender stops
    (then it counts as sent, not acknowledged). Ids: ``export_request``'s."""

    def __init__(self, client: Client, records_per_s: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.client, self.records_per_s, self.prefix = client, records_per_s, prefix
        self.sent = 0
        self.acknowledged: list[str] = []
        self.failures: Counter[str] = Counter()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)

    def run(self) -> None:
        channel = self.client.channel()
        call = channel.unary_unary(LOGS_EXPORT_METHOD)
        started, n = time.monotonic(), 0
        while not self._stopping.is_set():
            body, ids = export_request(self.prefix, n)
            self.sent += len(ids)
            while not self._stopping.is_set():
                try:
                    call(body, timeout=5, metadata=self.client.metadata or None)
                except grpc.RpcError as exc:
                    self.failures[exc.code().name] += 1
                    if self._stopping.wait(RETRY_PAUSE_S):
                        break
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:  # a restarted sidecar: connect afresh
                        channel.close()
                        channel = self.client.channel()
                        call = channel.unary_unary(LOGS_EXPORT_METHOD)
                    continue
                self.acknowledged.extend(ids)
                break
            n += 1
            if self.records_per_s:
                self._stopping.wait(max(0.0, started + n * RECORDS_PER_REQUEST / self.records_per_s - time.monotonic()))
        channel.close()


class Downstream(OtlpSink):
    """``OtlpSink`` that takes ``delay_s`` per log export (0: none): a downstream of known capacity."""

    delay_s = 0.0

    def _export_logs(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super()._export_logs(request, context)


class Deliveries:
    """Counts arrivals at the downstream by ``test.id``, reading only requests not read before. A
    request with invalid UTF-8 in a string (a mutated record forwarded byte for byte, which the
    Collector accepts) is kept raw by ``OtlpSink``; it is read here with the sidecar's lenient codec."""

    def __init__(self, sink: OtlpSink) -> None:
        self.sink = sink
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()  # log.anomaly.status of the records counted
        self._seen = self._seen_raw = 0

    def update(self) -> Counter[str]:
        requests = self.sink.log_requests()
        raw = list(self.sink.invalid_utf8)
        for request in [*requests[self._seen:], *(decode_protobuf(body) for body in raw[self._seen_raw:])]:
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        for kv in record.attributes:
                            key = kv.key.decode(errors="replace") if isinstance(kv.key, bytes) else kv.key  # lenient
                            if key in ("test.id", "log.anomaly.status"):
                                value = kv.value.string_value
                                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                                (self.counts if key == "test.id" else self.statuses)[text] += 1
        self._seen, self._seen_raw = len(requests), len(raw)
        return self.counts

    def wait(self, ids: set[str], durations: Durations, holding: Callable[[], float]) -> None:
        """Until every id in ``ids`` arrived, or nothing arrived for ``quiet_s`` while ``holding()``
        (records the sidecar still holds) is 0, or ``settle_s`` passed."""
        deadline = time.monotonic() + durations.settle_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            counts = self.update()
            if ids <= counts.keys():
                return
            total = sum(counts.values())
            if total != last:
                last, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > durations.quiet_s and not holding():
                return
            time.sleep(0.25)


class PeakRss(threading.Thread):
    """Samples ``VmHWM`` (peak RSS) of every watched process until stopped; ``peak_mib`` is the
    largest seen (a killed process keeps its last sample)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: list[int] = []
        self.peak_mib = 0.0
        self._stopping = threading.Event()

    def watch(self, process: SidecarProcess) -> SidecarProcess:
        assert process.process is not None
        self.pids.append(process.process.pid)
        return process

    def run(self) -> None:
        while not self._stopping.wait(0.2):
            for pid in self.pids:
                self.peak_mib = max(self.peak_mib, _vm_hwm_mib(pid))

    def stop(self) -> float:
        self._stopping.set()
        self.join(5)
        return self.peak_mib


def _vm_hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Row:
    scenario: str
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    peak_rss_mib: float = 0.0
    healthy: bool = False
    note: str = ""

    def markdown(self) -> str:
        return (f"| {self.scenario} | {self.sent:,} | {self.acknowledged:,} | {self.delivered:,} | {self.lost:,} | "
                f"{self.duplicated:,} | {self.peak_rss_mib:.0f} | {'yes' if self.healthy else 'NO'} | {self.note} |")


HEADER = ("| scenario | sent | acknowledged | delivered | lost | duplicated | peak RSS MiB | healthy after | note |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")


@dataclass
class Run:
    """One scenario's processes, downstream, senders and counts; ``row()`` settles and counts."""

    name: str
    bundle: Path
    workdir: Path
    durations: Durations
    sink: Downstream = field(init=False)
    deliveries: Deliveries = field(init=False)
    rss: PeakRss = field(default_factory=PeakRss)
    senders: list[Sender] = field(default_factory=list)
    processes: list[SidecarProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = self.workdir / self.name
        self.workdir.mkdir(parents=True)
        self.sink = Downstream().start()
        self.deliveries = Deliveries(self.sink)
        self.rss.start()

    def config(self, **sections: dict[str, Any]) -> dict[str, Any]:
        """The sidecar config (ports filled in by ``SidecarProcess``); ``sections`` merged over it."""
        config: dict[str, Any] = {
            "forward": {"endpoint": self.sink.endpoint, "drain_timeout_s": 10.0,
                        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 1.0}},
            "sessions": {"inactivity_timeout_s": 1.0, "max_age_s": 30},
            "scoring": {"bundle": str(self.bundle), "batch_timeout_ms": 5},
            "traces": {"enabled": False},
            "telemetry": {"log_format": "json"},
        }
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        return config

    def start(self, config: dict[str, Any]) -> SidecarProcess:
        """A sidecar on ``config``; a second call with the returned process's config reuses its ports."""
        process = SidecarProcess(config, self.workdir).start(timeout_s=120)
        self.processes.append(process)
        self.rss.watch(process)
        return process

    def same_ports(self, process: SidecarProcess, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with ``process``'s receiver and telemetry endpoints (a restart in place)."""
        out = json.loads(json.dumps(config))
        receivers = out.setdefault("receivers", {})
        for protocol, port in (("grpc", process.grpc_port), ("http", process.http_port)):
            receivers[protocol] = {**receivers.get(protocol, {}), "endpoint": f"127.0.0.1:{port}"}
        out["telemetry"] = {**out.get("telemetry", {}), "endpoint": f"127.0.0.1:{process.telemetry_port}"}
        return out

    def send(self, client: Client, records_per_s: float, senders: int = 1) -> list[Sender]:
        started = [Sender(client, records_per_s / senders, f"{self.name}-{len(self.senders) + i}")
                   for i in range(senders)]
        for sender in started:
            sender.start()
        self.senders.extend(started)
        return started

    def stop_senders(self) -> None:
        for sender in self.senders:
            sender.stop()

    def row(self, process: SidecarProcess, client: Client, note: str = "",
            after: Callable[[], str] | None = None) -> Row:
        """Stop the senders, wait for deliveries, check health through ``process``, count, clean up;
        ``after()`` (run before the processes stop) adds to the note."""
        self.stop_senders()
        acked = {i for s in self.senders for i in s.acknowledged}
        self.deliveries.wait(acked, self.durations, lambda: holding(process))
        counts = Counter(self.deliveries.update())  # before the health probe adds to it
        lost = sorted(acked - counts.keys())
        if lost:
            note += f"; lost e.g. {', '.join(lost[:3])}"
        why = unhealthy(process, client, self.deliveries, self.durations)
        if why:
            note += f"; unhealthy: {why}"
        if after is not None:
            note += after()
        row = Row(self.name, sent=sum(s.sent for s in self.senders), acknowledged=len(acked),
                  delivered=len(acked & counts.keys()), lost=len(lost),
                  duplicated=sum(counts[i] - 1 for i in acked if counts[i] > 1),
                  peak_rss_mib=self.rss.peak_mib, healthy=not why, note=note)
        self.close()
        return row

    def close(self) -> None:
        self.stop_senders()
        for process in self.processes:
            if process.process is not None:
                process.stop()
        self.rss.stop()
        self.sink.stop()


def holding(process: SidecarProcess) -> float:
    """Records ``process`` still holds: open sessions, scoring and forward queues, persistent queue
    entries (0 when it does not answer)."""
    return sum(process.metric(name) for name in ("otel_logbert_buffer_records", "otel_logbert_queue_records",
                                                 "otel_logbert_persistence_entries"))


def unhealthy(process: SidecarProcess, client: Client, deliveries: Deliveries, durations: Durations) -> str:
    """Why ``process`` is not healthy ("" when it is): running, ``/healthz`` and ``/readyz`` 200,
    and one fresh request acknowledged and delivered (all within ``settle_s``)."""
    deadline = time.monotonic() + durations.settle_s
    if process.process is None or process.process.poll() is not None:
        return "not running"
    while (status := (process.get("/healthz")[0], process.get("/readyz")[0])) != (200, 200):
        if time.monotonic() > deadline:
            return f"healthz/readyz {status}"
        time.sleep(0.2)
    body, ids = export_request("probe", 0)
    with client.channel() as channel:
        try:
            channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10, metadata=client.metadata or None)
        except grpc.RpcError as exc:
            return f"probe request {exc.code().name}"
    while time.monotonic() < deadline:
        if set(ids) <= deliveries.update().keys():
            return ""
        time.sleep(0.2)
    return "probe request not delivered"


def plain(process: SidecarProcess) -> Client:
    return Client(process.grpc_target)


def failures(run: Run) -> str:
    total: Counter[str] = Counter()
    for sender in run.senders:
        total.update(sender.failures)
    return ", ".join(f"{code} x{n:,}" for code, n in total.most_common()) or "none"


# --- scenarios ----------------------------------------------------------------------------------


Scenario = Callable[[Run, float], Row]


def baseline(run: Run, rate: float) -> Row:
    sidecar = run.start(run.config())
    run.send(plain(sidecar), rate)
    time.sleep(run.durations.stream_s)
    return run.row(sidecar, plain(sidecar), f"{rate:,.0f} records/s, {run.durations.stream_s:.0f} s")


def downstream_down(run: Run, rate: float) -> Row:
    sidecar = run.start(run.config())
    run.send(plain(sidecar), rate)
    time.sleep(run.durations.stream_s / 3)
    run.sink.stop()
    time.sleep(run.durations.outage_s)
    run.sink.start()
    time.sleep(run.durations.stream_s / 3)
    return run.row(sidecar, plain(sidecar), f"down {run.durations.outage_s:.0f} s; sender saw {failures(run)}")


def slow_downstream(run: Run, rate: float) -> Row:
    """For a third of the stream the downstream answers after 0.5 s, past ``forward.timeout_s``
    (0.2 s), yet keeps what it got: every retry is a real duplicate (at-least-once), and the
    sidecar's ``records_possible_duplicates`` must count at least as many."""
    sidecar = run.start(run.config(forward={"timeout_s": 0.2}))
    run.send(plain(sidecar), rate)
    time.sleep(run.durations.stream_s / 3)
    run.sink.delay_s = 0.5
    time.sleep(run.durations.stream_s / 3)
    run.sink.delay_s = 0.0
    time.sleep(run.durations.stream_s / 3)
    def counted() -> str:
        value = sidecar.metric("otel_logbert_records_possible_duplicates_total", cause="retry")
        return f"; counted as possible duplicates {value:,.0f}"

    note = f"downstream 0.5 s/request for {run.durations.stream_s / 3:.0f} s, forward.timeout_s 0.2"
    return run.row(sidecar, plain(sidecar), note, after=counted)


def triton_killed(run: Run, rate: float) -> Row:
    """Scoring on a real tritonserver (python backend, the rule bundle's generated repository),
    killed for a third of the stream and started again on the same ports: records flow on unscored
    (fail open) meanwhile, and are scored again after (verdict cache off, so the outage shows)."""
    from otel_logbert.triton.repository import write_triton_repository
    from otel_logbert.triton.server import TritonServer

    repository = run.workdir / "model_repository"
    write_triton_repository(run.bundle, repository, "python")
    triton = TritonServer(repository, run.workdir / "tritonserver").start()
    try:
        triton_config = {"url": triton.grpc_url, "model_name": None, "timeout_s": 0.5}
        sidecar = run.start(run.config(scoring={"scorer": "triton", "timeout_s": 2, "cache_entries": 0,
                                                "triton": triton_config}))
        run.send(plain(sidecar), rate)
        time.sleep(run.durations.stream_s / 3)
        triton.kill()
        time.sleep(run.durations.stream_s / 3)
        triton.start()
        time.sleep(run.durations.stream_s / 3)

        def statuses() -> str:
            return "; statuses " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.deliveries.statuses.items()))

        note = f"tritonserver killed for {run.durations.stream_s / 3:.0f} s, then started again"
        return run.row(sidecar, plain(sidecar), note, after=statuses)
    finally:
        triton.stop()


def sigterm(run: Run, rate: float) -> Row:
    config = run.config()
    first = run.start(config)
    run.send(plain(first), rate)
    time.sleep(run.durations.stream_s / 2)
    code = first.stop()
    second = run.start(run.same_ports(first, config))
    time.sleep(run.durations.stream_s / 2)
    return run.row(second, plain(second), f"exit {code}, restarted on the same ports; sender saw {failures(run)}")


def _sigkill(run: Run, rate: float, persistent: bool) -> Row:
    config = run.config(persistence={"directory": str(run.workdir / "queue")} if persistent else {})
    first = run.start(config)
    run.send(plain(first), rate)
    time.sleep(run.durations.stream_s / 2)
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)
    second = run.start(run.same_ports(first, config))
    time.sleep(run.durations.stream_s / 2)
    replay = second.metric("otel_logbert_records_replayed_total")
    maybe = second.metric("otel_logbert_records_possible_duplicates_total")
    return run.row(second, plain(second), f"restarted; replayed {replay:,.0f}, counted as possible duplicates "
                                          f"{maybe:,.0f}")


def sigkill_memory_only(run: Run, rate: float) -> Row:
    return _sigkill(run, rate, persistent=False)


def sigkill_persistent(run: Run, rate: float) -> Row:
    return _sigkill(run, rate, persistent=True)


def overload(run: Run, rate: float) -> Row:
    """The downstream takes 25 ms per request and the sidecar forwards one request of at most 500
    records at a time, so the pipeline's capacity (about 20,000 records/s) is below what the senders
    can offer on a small machine; measured first with unthrottled senders, then offered twice over.
    ``queue_max_records`` 50,000 so that back-pressure starts within seconds."""
    run.sink.delay_s = 0.025
    sidecar = run.start(run.config(forward={"batch_max_records": 500, "max_in_flight": 1,
                                            "queue_max_records": 50_000}))
    probe = run.send(plain(sidecar), 0, senders=4)  # unthrottled: what gets through is the sustainable rate
    time.sleep(2.0)  # sessions close after 1 s of inactivity: count deliveries once they flow
    before = sum(run.deliveries.update().values())
    time.sleep(run.durations.probe_s)
    sustainable = (sum(run.deliveries.update().values()) - before) / run.durations.probe_s
    for sender in probe:
        sender.stop()
    run.deliveries.wait({i for s in probe for i in s.acknowledged}, run.durations, lambda: holding(sidecar))
    offered = run.send(plain(sidecar), 2 * sustainable, senders=4)
    time.sleep(run.durations.overload_s)
    rate_sent = sum(s.sent for s in offered) / run.durations.overload_s
    note = (f"downstream 25 ms/request, queue 50k; sustainable {sustainable:,.0f} records/s (unthrottled probe), then "
            f"2x asked, {rate_sent:,.0f}/s offered for {run.durations.overload_s:.0f} s; sender saw {failures(run)}")
    return run.row(sidecar, plain(sidecar), note)


def queue_full(run: Run, rate: float) -> Row:
    queue = {"directory": str(run.workdir / "queue"), "max_bytes": 1 << 20, "segment_bytes": 256 << 10}
    sidecar = run.start(run.config(persistence=queue))
    run.sink.stop()  # nothing is delivered, so the log only grows to max_bytes
    run.send(plain(sidecar), rate)
    deadline = time.monotonic() + run.durations.stream_s + run.durations.outage_s
    while not run.senders[0].failures["RESOURCE_EXHAUSTED"] and time.monotonic() < deadline:
        time.sleep(0.2)
    full_after = len(run.senders[0].acknowledged)
    time.sleep(run.durations.stream_s / 3)  # pushed back while full
    fill = sidecar.metric("otel_logbert_persistence_fill")
    run.sink.start()
    time.sleep(run.durations.stream_s / 3)
    return run.row(sidecar, plain(sidecar), f"max_bytes 1 MiB full after {full_after:,} records "
                                            f"(fill {fill:.2f}); sender saw {failures(run)}")


def mutated(run: Run, rate: float) -> Row:
    sidecar = run.start(run.config())
    run.send(plain(sidecar), rate / 2)  # valid traffic meanwhile: it must all arrive
    rng = random.Random(11)
    valid = [export_request("mutated", n)[0] for n in range(20)]
    n = run.durations.mutations
    answers: Counter[str] = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        kind = ("grpc-flip", "http-flip", "http-json")[i % 3]
        body = _flip(rng, valid[i % len(valid)]) if kind != "http-json" else _random_json(rng)
        answer = _grpc_raw(sidecar.grpc_target, body) if kind == "grpc-flip" else _http_raw(
            sidecar.http_port, body, PROTOBUF if kind == "http-flip" else "application/json")
        with lock:
            answers[f"{kind.split('-')[0]} {answer}"] += 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    bad = sum(v for k, v in answers.items() if k.split()[1] in {"INTERNAL", "UNKNOWN"} or k.split()[1][0] == "5")
    summary = ", ".join(f"{k} x{v:,}" for k, v in sorted(answers.items()))
    return run.row(sidecar, plain(sidecar), f"{n:,} mutated requests, {bad} answered 5xx/INTERNAL: {summary}")


def wrong_tokens(run: Run, rate: float) -> Row:
    token = run.workdir / "token"
    token.write_text(TOKEN + "\n")
    sidecar = run.start(run.config(receivers={"auth": {"token_file": str(token)}}))
    good = Client(sidecar.grpc_target, metadata=(("authorization", f"Bearer {TOKEN}"),))
    run.send(good, rate)
    wrong = ["", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer ", f"bearer {TOKEN[:-1]}", "Bearer " + "A" * 8192]
    answers: Counter[str] = Counter()
    for i in range(max(60, run.durations.mutations // 20)):
        header = wrong[i % len(wrong)]
        body = export_request("intruder", i)[0]
        answers[f"grpc {_grpc_raw(sidecar.grpc_target, body, header)}"] += 1
        answers[f"http {_http_raw(sidecar.http_port, body, PROTOBUF, header)}"] += 1
    accepted = answers["grpc OK"] + answers["http 200"]
    summary = ", ".join(f"{k} x{v:,}" for k, v in sorted(answers.items()))
    note = f"{sum(answers.values()):,} requests with wrong or missing tokens, {accepted} accepted: {summary}"
    return run.row(sidecar, good, note)


def tls_wrong_certificates(run: Run, rate: float) -> Row:
    certs = run.workdir / "certs"
    ca, foreign = Authority(certs, "ca"), Authority(certs / "foreign", "foreign")
    server, client = ca.issue("server", server=True), ca.issue("client", server=False)
    expired, stranger = ca.issue("expired", server=False, expired=True), foreign.issue("stranger", server=False)
    tls = {"cert_file": str(server.cert_file), "key_file": str(server.key_file), "client_ca_file": str(ca.cert_file)}
    sidecar = run.start(run.config(receivers={"grpc": {"tls": tls}, "http": {"tls": dict(tls)}}))
    good = Client(sidecar.grpc_target, _grpc_credentials(ca.cert_file, client))
    run.send(good, rate)
    attempts: dict[str, tuple[Path | None, Issued | None]] = {
        "no client cert": (ca.cert_file, None), "expired client cert": (ca.cert_file, expired),
        "foreign client cert": (ca.cert_file, stranger), "server not trusted": (foreign.cert_file, client),
    }
    accepted: Counter[str] = Counter()
    tries = 0
    for _ in range(max(5, run.durations.mutations // 200)):
        for name, (root, cert) in attempts.items():
            tries += 2
            body = export_request("intruder", 0)[0]
            target = Client(sidecar.grpc_target, _grpc_credentials(root, cert))
            with target.channel() as channel:
                try:
                    channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=5)
                    accepted[f"grpc {name}"] += 1
                except grpc.RpcError:
                    pass
            if _https_ok(sidecar.http_port, body, root, cert):
                accepted[f"http {name}"] += 1
        tries += 2
        if _grpc_raw(sidecar.grpc_target, export_request("intruder", 0)[0]) == "OK":
            accepted["grpc plaintext"] += 1
        if _http_raw(sidecar.http_port, export_request("intruder", 0)[0], PROTOBUF) == "200":
            accepted["http plaintext"] += 1
    note = (f"mTLS on both receivers; {tries:,} handshakes with wrong certificates or plaintext, "
            f"{sum(accepted.values())} accepted" + (f" {dict(accepted)}" if accepted else ""))
    return run.row(sidecar, good, note)


SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline,
    "downstream-down": downstream_down,
    "slow-downstream": slow_downstream,
    "triton-killed": triton_killed,
    "sigterm": sigterm,
    "sigkill-memory-only": sigkill_memory_only,
    "sigkill-persistent-queue": sigkill_persistent,
    "overload-2x": overload,
    "persistent-queue-full": queue_full,
    "mutated-requests": mutated,
    "wrong-tokens": wrong_tokens,
    "tls-wrong-certificates": tls_wrong_certificates,
}


# --- raw clients for hostile requests ---------------------------------------------------------------


def _flip(rng: random.Random, body: bytes) -> bytes:
    """``body`` with 1-8 random bytes replaced, sometimes cut short."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.2:
        del data[rng.randrange(len(data)):]
    return bytes(data)


def _random_json(rng: random.Random, depth: int = 0) -> bytes:
    def value(d: int) -> Any:
        kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict", "otlp"] if d < 6 else [])
        kind = rng.choice(kinds)
        if kind == "str":
            return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randint(0, 20)))
        if kind == "int":
            return rng.randint(-2**70, 2**70)
        if kind == "float":
            return rng.uniform(-1e300, 1e300)
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "null":
            return None
        if kind == "list":
            return [value(d + 1) for _ in range(rng.randint(0, 4))]
        if kind == "otlp":  # OTLP field names with values of any type
            keys = ["resourceLogs", "scopeLogs", "logRecords", "body", "attributes", "stringValue", "kvlistValue",
                    "arrayValue", "values", "key", "value", "traceId", "timeUnixNano", "severityNumber"]
            return {rng.choice(keys): value(d + 1) for _ in range(rng.randint(1, 4))}
        return {"".join(rng.choice("abcxyz") for _ in range(3)): value(d + 1) for _ in range(rng.randint(0, 4))}

    return json.dumps({"resourceLogs": value(depth)} if rng.random() < 0.7 else value(depth)).encode()


def _grpc_raw(target: str, body: bytes, authorization: str | None = None) -> str:
    """One raw gRPC export; the status code's name."""
    metadata = (("authorization", authorization),) if authorization else None
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def _http_raw(port: int, body: bytes, content_type: str, authorization: str | None = None) -> str:
    """One ``POST /v1/logs``; the status as text, or the exception's name."""
    headers = {"Content-Type": content_type, **({"Authorization": authorization} if authorization else {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/v1/logs", body, headers)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def _grpc_credentials(root: Path | None, cert: Issued | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=root.read_bytes() if root else None,
        private_key=cert.key_file.read_bytes() if cert else None,
        certificate_chain=cert.cert_file.read_bytes() if cert else None,
    )


def _https_ok(port: int, body: bytes, root: Path | None, cert: Issued | None) -> bool:
    context = ssl.create_default_context(cafile=str(root) if root else None)
    if cert is not None:
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        connection.request("POST", "/v1/logs", body, {"Content-Type": PROTOBUF})
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# --- main ---------------------------------------------------------------------------------------


@contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"# {name} ...", file=sys.stderr, flush=True)
    yield
    print(f"# {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="every duration and count times this")
    parser.add_argument("--quick", action="store_true", help="--scale 0.1 (floors keep each scenario meaningful)")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s of the steady senders")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run these scenarios only")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    durations = Durations.scaled(0.1 if args.quick else args.scale)
    workdir = Path(tempfile.mkdtemp(prefix="otel-logbert-chaos-"))
    bundle = make_rule_bundle(workdir / "bundle")
    lines = [HEADER]
    print(HEADER, flush=True)
    for name in args.only or SCENARIOS:
        with timed(name):
            run = Run(name, bundle, workdir, durations)
            try:
                row = SCENARIOS[name](run, args.rate)
            except Exception as exc:  # one broken scenario is a row, not the end of the run
                run.close()
                row = Row(name, note=f"scenario failed: {type(exc).__name__}: {exc}"[:300])
        lines.append(row.markdown())
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
