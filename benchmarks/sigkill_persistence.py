"""SIGKILL mid-stream, with and without the persistent queue: how many acknowledged records are lost.

Each run: a real ``otel-logbert serve`` process (``tests.conftest.SidecarProcess``; embedded ONNX
Runtime, the tests' rule bundle), OTLP/gRPC requests of 50 records (10 new traces of 5) sent at
``--rate`` records/s by one sender that keeps the id of every record whose request was answered
OK, a real downstream OTLP receiver in this process. After ``--seconds`` the sidecar gets SIGKILL; a
new one starts on the same configuration (and persistent queue directory), and the run ends once
every acknowledged record arrived or nothing arrived for 5 s. Counted: acknowledged, delivered
(acknowledged records that arrived), lost (acknowledged, never arrived), duplicated (extra arrivals
of a record), and the restarted sidecar's ``records_replayed`` by state.

Usage::

    python benchmarks/sigkill_persistence.py [--runs 3] [--rate 5000] [--seconds 8] [--out FILE]

Prints one JSON object per run and a summary with medians per mode.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from otel_logbert.demo.receiver import OtlpReceiver  # noqa: E402
from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD  # noqa: E402
from tests.conftest import (  # noqa: E402
    RECORDS_PER_TRACE,
    TRACES_PER_REQUEST,
    SidecarProcess,
    export_request,
    make_rule_bundle,
)


def send(target: str, rate: float, seconds: float, acknowledged: list[str], stop: threading.Event) -> None:
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(LOGS_EXPORT_METHOD)
    per_request = TRACES_PER_REQUEST * RECORDS_PER_TRACE / rate
    started, n = time.monotonic(), 0
    while not stop.is_set():
        body, ids = export_request(n)
        try:
            call(body, timeout=5)
            acknowledged.extend(ids)
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED,):
                break  # the sidecar is gone
        n += 1
        stop.wait(max(0.0, started + n * per_request - time.monotonic()))
    channel.close()


def one_run(bundle: Path, persistence: bool, rate: float, seconds: float, run: int, workdir: Path) -> dict:
    sink = OtlpReceiver(max_message_bytes=-1).start()
    config = {
        "forward": {"endpoint": sink.endpoint},
        "sessions": {"inactivity_timeout_s": 5.0},
        "scoring": {"bundle": str(bundle)},
        "traces": {"enabled": False},
        "telemetry": {"log_format": "json"},
    }
    if persistence:
        config["persistence"] = {"directory": str(workdir / f"queue-{run}")}
    first = SidecarProcess(config, workdir).start(timeout_s=120)
    acknowledged: list[str] = []
    stop = threading.Event()
    sender = threading.Thread(target=send, args=(first.grpc_target, rate, seconds, acknowledged, stop))
    sender.start()
    time.sleep(seconds)
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)
    stop.set()
    sender.join(30)
    acked = set(acknowledged)
    second = SidecarProcess(config, workdir).start(timeout_s=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if persistence and acked <= delivered(sink).keys():
            break
        sink.wait_quiet(5.0, timeout_s=5.5)
        if not persistence:
            break
    counts = delivered(sink)
    result = {
        "persistence": persistence, "rate": rate, "seconds": seconds,
        "acknowledged": len(acked), "delivered": len(acked & counts.keys()), "lost": len(acked - counts.keys()),
        "duplicated": sum(n - 1 for n in counts.values()),
        "replayed_held": second.metric("otel_logbert_records_replayed_total", state="held"),
        "replayed_in_flight": second.metric("otel_logbert_records_replayed_total", state="in_flight"),
    }
    second.stop()
    sink.stop(0)
    return result


def delivered(sink: OtlpReceiver) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _, _, record in sink.records():
        for kv in record.attributes:
            if kv.key == "test.id":
                counts[kv.value.string_value] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5000.0, help="records/s sent")
    parser.add_argument("--seconds", type=float, default=8.0, help="sending time before the SIGKILL")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="otel-logbert-sigkill-"))
    bundle = make_rule_bundle(workdir / "bundle")
    results = []
    for run in range(args.runs):
        for persistence in (False, True):
            results.append(one_run(bundle, persistence, args.rate, args.seconds, run, workdir))
            print(json.dumps(results[-1]), flush=True)
    summary = {}
    for persistence in (False, True):
        rows = [r for r in results if r["persistence"] == persistence]
        summary["with" if persistence else "without"] = {
            key: statistics.median(r[key] for r in rows)
            for key in ("acknowledged", "delivered", "lost", "duplicated", "replayed_held", "replayed_in_flight")
        }
    print(json.dumps({"summary": summary, "runs": args.runs, "rate": args.rate, "seconds": args.seconds}, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
