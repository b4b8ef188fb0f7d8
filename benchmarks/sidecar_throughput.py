"""End-to-end benchmark of ``otel-logbert serve`` with the embedded ONNX Runtime scorer.

Three measurements, each against a fresh sidecar process on localhost (OTLP/gRPC in, OTLP/gRPC out
to a counting receiver in this process), on HDFS-like records: the messages of
``HDFS_20000.log`` (content after the header as the body, level as severity, the header's time as
the timestamp), replayed with block ids renamed per replay so each replay makes new sessions,
sessions keyed by ``blk_-?\\d+`` (``sessions.key: regex``):

1. throughput: records/s from the first request sent to the last enriched record received,
   sending as fast as the sidecar accepts (honouring its back-pressure);
2. latency: p50/p99 from session close to forwarded (acknowledged downstream), from the sidecar's
   ``otel_logbert_session_forward_latency_seconds`` histogram (linear within a bucket), while
   sending at half the throughput measured in (1) (``--latency-rate`` sets another rate); beside it
   the part from close to verdict (``..._verdict_latency_seconds``) and the scorer's time per batch.
   The downstream of this measure runs in its own process, as a real one would;
3. memory: RSS of the sidecar holding 100,000 open sessions (``--session-length`` records each;
   untimed records, so no per-key timestamps are kept), once per run;
4. beside (1) in every run, in this process while no sidecar runs: drain3's own
   ``TemplateMiner.add_log_message`` (same preset and Drain parameters, trained on the messages
   first, then timed over them again, as ``benchmarks/parse_throughput.py``) in lines/s, and the
   ratio of the end-to-end rate to it.

Usage::

    python benchmarks/sidecar_throughput.py [--bundle DIR] [--runs 3] [--records 300000] [--out FILE]
                                            [--persistence] [--latency-rate R]

``--persistence`` runs every sidecar with the persistent queue on (``persistence.directory`` in the
benchmark's temporary directory, on the disk ``TMPDIR`` is on): its cost is the difference to a run
without.

Without ``--bundle`` a small FastLogAD bundle is trained first with ``otel-logbert train`` (needs
torch). Prints one JSON object per measurement and a summary with medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

REPO = Path(__file__).resolve().parent.parent
HDFS = Path(os.environ.get("HDFS_LOG", REPO.parent / "shared" / "datasets" / "hdfs_raw" / "HDFS_20000.log"))
HEADER = re.compile(r"^(\d{6}) (\d{6}) \d+ ([A-Z]+) ([\w.$]+): (.*)$")
BLOCK = re.compile(r"blk_(-?\d+)")
EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
RECORDS_PER_REQUEST = 512
SEVERITY = {"INFO": 9, "WARN": 13, "ERROR": 17}
PARSING: dict = {}  # extra parsing settings for every sidecar (--parsing-workers)


# --- workload ---------------------------------------------------------------------------------------


def hdfs_lines() -> list[tuple[str, str, str, int]]:
    """(level, component, content, unix nanos) per line of the HDFS sample."""
    out = []
    for line in HDFS.read_text().splitlines():
        m = HEADER.match(line)
        if m is None:
            continue
        date, clock, level, component, content = m.groups()
        t = time.mktime(time.strptime(f"20{date} {clock}", "%Y%m%d %H%M%S"))
        out.append((level, component, content, int(t * 1e9)))
    return out


def build_requests(lines: list[tuple[str, str, str, int]], n_records: int, salt: int) -> list[bytes]:
    """``n_records`` records in requests of 512; replay ``r`` renames block ids with a suffix."""
    requests, records = [], []
    replay = 0
    while len(records) < n_records:
        suffix = f"{salt:02d}{replay:04d}"
        for level, component, content, ts in lines:
            body = BLOCK.sub(lambda m, s=suffix: f"blk_{m.group(1)}{s}", content)
            record = logs_pb2.LogRecord(time_unix_nano=ts, severity_text=level,
                                        severity_number=SEVERITY.get(level, 9))
            record.body.string_value = body
            record.attributes.add(key="code.namespace").value.string_value = component
            records.append(record)
            if len(records) == n_records:
                break
        replay += 1
    for start in range(0, len(records), RECORDS_PER_REQUEST):
        request = logs_service_pb2.ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = "hdfs-datanode"
        sl = rl.scope_logs.add()
        sl.scope.name = "filelog"
        sl.log_records.extend(records[start : start + RECORDS_PER_REQUEST])
        requests.append(request.SerializeToString())
    return requests


def open_session_requests(lines: list[tuple[str, str, str, int]], sessions: int, length: int) -> list[bytes]:
    """``sessions`` distinct blocks with ``length`` records each, interleaved."""
    contents = [c for _, _, c, _ in lines if BLOCK.search(c)][:length]
    requests: list[bytes] = []
    request = logs_service_pb2.ExportLogsServiceRequest()
    sl = request.resource_logs.add().scope_logs.add()
    for i in range(length):
        for s in range(sessions):
            record = sl.log_records.add(severity_text="INFO", severity_number=9)
            record.body.string_value = BLOCK.sub(f"blk_{7_000_000 + s}", contents[i % len(contents)], count=1)
            if len(sl.log_records) == RECORDS_PER_REQUEST:
                requests.append(request.SerializeToString())
                request = logs_service_pb2.ExportLogsServiceRequest()
                sl = request.resource_logs.add().scope_logs.add()
    if len(sl.log_records):
        requests.append(request.SerializeToString())
    return requests


# --- the downstream: counts records -----------------------------------------------------------------


class CountingSink:
    def __init__(self) -> None:
        self.records = 0
        self.last_at = 0.0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", -1)])
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # bytes in, bytes out
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self._lock:
            self.records += n
            self.last_at = time.perf_counter()
        return b""

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.records < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records >= n

    def stop(self) -> None:
        self.server.stop(0)


def _serve_counting_sink(port: Any, records: Any) -> None:  # two multiprocessing Values
    """The body of ``SinkProcess``: a ``CountingSink`` whose port and count live in shared memory."""
    sink = CountingSink()
    port.value = sink.port
    while True:
        records.value = sink.records
        time.sleep(0.002)


class SinkProcess:
    """A ``CountingSink`` in its own process: the downstream's decoding then competes neither with the
    senders' threads in this process nor for this process's GIL, as a real downstream would not."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._port, self._records = context.Value("i", 0), context.Value("q", 0)
        self._process = context.Process(target=_serve_counting_sink, args=(self._port, self._records), daemon=True)
        self._process.start()
        deadline = time.monotonic() + 30
        while not self._port.value and time.monotonic() < deadline:
            time.sleep(0.01)
        self.port = self._port.value

    @property
    def records(self) -> int:
        return self._records.value

    wait_for = CountingSink.wait_for  # it reads only ``records``

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(5)


# --- the sidecar process ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PERSISTENCE = False  # --persistence: every sidecar writes its persistent queue under its workdir


class Sidecar:
    def __init__(self, bundle: Path, sink_port: int, workdir: Path, **sessions: float) -> None:
        self.grpc_port, self.telemetry_port = free_port(), free_port()
        persistence = {"directory": str(workdir / f"queue-{self.grpc_port}")} if PERSISTENCE else {}
        config = {
            "receivers": {"grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"}, "http": {"endpoint": None}},
            "forward": {"endpoint": f"http://127.0.0.1:{sink_port}", "queue_max_records": 200_000},
            "traces": {"enabled": False},
            "parsing": {"masking": "hdfs", **PARSING},
            "sessions": {"key": "regex", "regex": r"blk_-?\d+", "inactivity_timeout_s": 0.5, "max_age_s": 60,
                         **sessions},
            "scoring": {"bundle": str(bundle), "batch_size": 256, "batch_timeout_ms": 10},
            "telemetry": {"endpoint": f"127.0.0.1:{self.telemetry_port}", "log_format": "json"},
            "persistence": persistence,
        }
        path = workdir / f"sidecar-{self.grpc_port}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.stderr = open(workdir / f"sidecar-{self.grpc_port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "otel_logbert.cli", "serve", "--config", str(path)],
                                        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 60
        while self.get("/readyz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sidecar did not start; see {self.stderr.name}")
            time.sleep(0.1)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry_port}{path}", timeout=5) as r:
                return r.status
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds used so far by (the event-loop thread, the sidecar with its child processes)."""
        main = _cpu_s(f"/proc/{self.process.pid}/task/{self.process.pid}/stat")
        total = sum(_cpu_s(f"/proc/{pid}/stat") for pid in _process_tree(self.process.pid))
        return main, total

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.stderr.close()


def _cpu_s(stat_path: str) -> float:
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo.extend(int(c) for c in task.read_text().split())
    return pids


# --- clients ----------------------------------------------------------------------------------------


def send_all(target: str, requests: list[bytes], threads: int = 3, rate: float | None = None) -> tuple[float, int]:
    """Send every request (retrying refused ones like a Collector would). ``rate``: records/s to pace
    at (None = as fast as accepted). Returns (seconds, refusals)."""
    queue = list(reversed(requests))
    lock = threading.Lock()
    refused = [0]
    started = time.perf_counter()
    per_request_s = (RECORDS_PER_REQUEST / rate) if rate else 0.0
    sent = [0]

    def worker() -> None:
        channel = grpc.insecure_channel(target)
        call = channel.unary_unary(EXPORT)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
                slot = sent[0]
                sent[0] += 1
            if per_request_s:
                delay = started + slot * per_request_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            while True:
                try:
                    call(body, timeout=30)
                    break
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                        raise
                    with lock:
                        refused[0] += 1
                    time.sleep(0.05)
        channel.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - started, refused[0]


def count_records(requests: list[bytes]) -> int:
    return sum(len(sl.log_records) for body in requests
               for rl in logs_service_pb2.ExportLogsServiceRequest.FromString(body).resource_logs
               for sl in rl.scope_logs)


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Quantile from cumulative Prometheus buckets, linear within the bucket."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = upper, cumulative
    return lower


# --- measurements -----------------------------------------------------------------------------------


def measure_throughput(bundle: Path, requests: list[bytes], n: int, workdir: Path,
                       py_spy: Path | None = None) -> dict:
    sink = CountingSink()
    sidecar = Sidecar(bundle, sink.port, workdir)
    profiler = attach_py_spy(sidecar.process.pid, py_spy) if py_spy is not None else None
    try:
        loop_cpu, all_cpu = sidecar.cpu_s()
        started = time.perf_counter()
        send_s, refused = send_all(f"127.0.0.1:{sidecar.grpc_port}", requests)
        ok = sink.wait_for(n, timeout_s=120)
        end_to_end_s = sink.last_at - started
        loop_cpu, all_cpu = (after - before for after, before in zip(sidecar.cpu_s(), (loop_cpu, all_cpu),
                                                                     strict=True))
        return {"measure": "throughput", "records": n, "delivered": sink.records, "complete": ok,
                "accepted_per_s": round(n / send_s), "end_to_end_per_s": round(sink.records / end_to_end_s),
                "refusals": refused, "rss_mib": round(sidecar.rss_mib()),
                # CPU per record: less sensitive to other load than rates; the loop's bounds the rate
                "loop_cpu_us_per_record": round(1e6 * loop_cpu / n, 1),
                "sidecar_cpu_us_per_record": round(1e6 * all_cpu / n, 1),
                "wall_s": round(end_to_end_s, 2)}
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            profiler.wait(60)
        sidecar.stop()
        sink.stop()


def attach_py_spy(pid: int, out: Path) -> subprocess.Popen:
    """py-spy (``$PY_SPY`` or on PATH) sampling every thread of ``pid`` into ``out`` (collapsed stacks)."""
    command = [os.environ.get("PY_SPY", "py-spy"), "record", "--pid", str(pid), "--threads", "--format", "raw",
               "--rate", "200", "--output", str(out)]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach before the load starts
    return profiler


def measure_drain3(lines: list[tuple[str, str, str, int]]) -> dict:
    """drain3 ``add_log_message`` lines/s over the messages, after one training pass over them: with
    the preset's rules as shipped (some gated by a cheap check first, ``GatedMaskingInstruction``)
    and with every rule as drain3's own ``MaskingInstruction`` (stock drain3)."""
    import logging

    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction

    from otel_logbert.parsing.drain import LogParser

    logging.disable(logging.INFO)  # drain3 logs every miner it starts
    messages = [content for _, _, content, _ in lines]
    out: dict = {"measure": "drain3", "lines": len(messages)}
    for name, stock in (("add_log_message_per_s", False), ("add_log_message_stock_rules_per_s", True)):
        config = LogParser("hdfs").miner_config()
        if stock:
            config.masking_instructions = [MaskingInstruction(r.regex.pattern, r.mask_with)
                                           for r in config.masking_instructions]
        miner = TemplateMiner(config=config)
        for message in messages:
            miner.add_log_message(message)
        started = time.perf_counter()
        for message in messages:
            miner.add_log_message(message)
        out[name] = round(len(messages) / (time.perf_counter() - started))
    return out


def measure_latency(bundle: Path, requests: list[bytes], n: int, rate: float, workdir: Path) -> dict:
    sink = SinkProcess()
    sidecar = Sidecar(bundle, sink.port, workdir)
    try:
        send_all(f"127.0.0.1:{sidecar.grpc_port}", requests, rate=rate)
        sink.wait_for(n, timeout_s=120)
        text = sidecar.metrics()
        name = "otel_logbert_session_forward_latency_seconds"
        count = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}_count"))
        scoring = "otel_logbert_scoring_duration_seconds"
        verdict = "otel_logbert_session_verdict_latency_seconds"
        return {"measure": "latency", "rate_per_s": round(rate), "sessions": int(count),
                "p50_ms": round(1000 * histogram_quantile(text, name, 0.50), 1),
                "p99_ms": round(1000 * histogram_quantile(text, name, 0.99), 1),
                # one part of the above: the scorer's own time per batch part (the rest is waiting for the
                # batch, the event loop and the forward request)
                "scoring_p50_ms": round(1000 * histogram_quantile(text, scoring, 0.50), 1),
                "scoring_p99_ms": round(1000 * histogram_quantile(text, scoring, 0.99), 1),
                # close -> verdict: the batch wait and scoring; the rest of p99_ms is annotation and forwarding
                "verdict_p50_ms": round(1000 * histogram_quantile(text, verdict, 0.50), 1),
                "verdict_p99_ms": round(1000 * histogram_quantile(text, verdict, 0.99), 1)}
    finally:
        sidecar.stop()
        sink.stop()


def measure_memory(bundle: Path, lines: list, sessions: int, length: int, workdir: Path) -> dict:
    sink = CountingSink()
    sidecar = Sidecar(bundle, sink.port, workdir, inactivity_timeout_s=3600, max_age_s=7200)
    try:
        baseline = sidecar.rss_mib()
        requests = open_session_requests(lines, sessions, length)
        send_all(f"127.0.0.1:{sidecar.grpc_port}", requests)
        open_now = 0.0
        for line in sidecar.metrics().splitlines():
            if line.startswith("otel_logbert_sessions_open{"):
                open_now = float(line.rsplit(" ", 1)[1])
        return {"measure": "memory", "open_sessions": int(open_now), "records_held": sessions * length,
                "rss_mib": round(sidecar.rss_mib()), "baseline_rss_mib": round(baseline)}
    finally:
        sidecar.stop()
        sink.stop()


def train_bundle(workdir: Path) -> Path:
    out = workdir / "fastlogad"
    subprocess.run([sys.executable, "-m", "otel_logbert.cli", "train", "--model", "fastlogad", "--train", str(HDFS),
                    "--session-regex", r"blk_-?\d+", "--masking", "hdfs", "--epochs", "2", "--quiet",
                    "--out", str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
                   stdout=subprocess.DEVNULL)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: train a small FastLogAD)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--sessions", type=int, default=100_000, help="open sessions for the memory measure")
    parser.add_argument("--session-length", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "latency", "memory"])
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument("--persistence", action="store_true", help="sidecars with the persistent queue on")
    parser.add_argument("--py-spy", type=Path, metavar="FILE", help="profile the throughput sidecar with py-spy "
                        "($PY_SPY or on PATH) into FILE (collapsed stacks, per thread)")
    parser.add_argument("--latency-rate", type=float, help="records/s of the latency measure (default: half the "
                        "measured throughput; 10,000 with --skip throughput)")
    parser.add_argument("--parsing-workers", type=int, help="parsing.workers of the sidecars (default: its default)")
    args = parser.parse_args()
    global PERSISTENCE
    PERSISTENCE = args.persistence
    if args.parsing_workers is not None:
        PARSING["workers"] = args.parsing_workers

    workdir = Path(tempfile.mkdtemp(prefix="otel-logbert-bench-"))
    bundle = args.bundle or train_bundle(workdir)
    lines = hdfs_lines()
    results: list[dict] = []
    rates: list[float] = []
    for run in range(args.runs):
        requests = build_requests(lines, args.records, salt=run)
        n = count_records(requests)
        if "throughput" not in args.skip:
            results.append(measure_throughput(bundle, requests, n, workdir, args.py_spy))
            rates.append(results[-1]["end_to_end_per_s"])
            print(json.dumps(results[-1]), flush=True)
            results.append(measure_drain3(lines))
            results[-1]["end_to_end_ratio"] = round(rates[-1] / results[-1]["add_log_message_per_s"], 2)
            results[-1]["end_to_end_ratio_stock"] = round(
                rates[-1] / results[-1]["add_log_message_stock_rules_per_s"], 2)
            print(json.dumps(results[-1]), flush=True)
        if "latency" not in args.skip:
            rate = args.latency_rate or (statistics.median(rates) / 2 if rates else 10_000.0)
            half = requests[: max(1, int(len(requests) * min(1.0, rate * 10 / n)))]  # ~10 s at that rate
            results.append(measure_latency(bundle, half, count_records(half), rate, workdir))
            print(json.dumps(results[-1]), flush=True)
        if "memory" not in args.skip:  # every run too: RSS varies by several MiB from run to run
            results.append(measure_memory(bundle, lines, args.sessions, args.session_length, workdir))
            print(json.dumps(results[-1]), flush=True)

    def median(measure: str, key: str) -> float | None:
        values = [r[key] for r in results if r["measure"] == measure]
        return statistics.median(values) if values else None

    summary = {
        "end_to_end_records_per_s": median("throughput", "end_to_end_per_s"),
        "accepted_records_per_s": median("throughput", "accepted_per_s"),
        "drain3_add_log_message_per_s": median("drain3", "add_log_message_per_s"),
        "end_to_end_over_drain3": median("drain3", "end_to_end_ratio"),
        "drain3_stock_rules_per_s": median("drain3", "add_log_message_stock_rules_per_s"),
        "end_to_end_over_drain3_stock_rules": median("drain3", "end_to_end_ratio_stock"),
        "loop_cpu_us_per_record": median("throughput", "loop_cpu_us_per_record"),
        "sidecar_cpu_us_per_record": median("throughput", "sidecar_cpu_us_per_record"),
        "p50_close_to_forwarded_ms": median("latency", "p50_ms"),
        "p99_close_to_forwarded_ms": median("latency", "p99_ms"),
        "rss_mib_100k_open_sessions": median("memory", "rss_mib"),
        "runs": args.runs, "cpus": os.cpu_count(), "bundle": str(bundle), "persistence": args.persistence,
    }
    print(json.dumps({"summary": summary}, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
