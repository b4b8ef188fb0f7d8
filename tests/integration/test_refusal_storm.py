"""Memory stays flat while the sidecar refuses (issue 11): a real ``otel-logbert serve`` process whose
downstream is down and whose queue bound is tiny answers a 15 s storm of ~160 KB requests from four
real senders with RESOURCE_EXHAUSTED / 503 (plus malformed ones: INVALID_ARGUMENT / 400), and its RSS
stays within 1.5x of its idle size on each protocol.

Before the fix the gRPC receiver answered with ``context.abort``, whose exception kept every refused
request alive in a reference cycle until a rare full collection: 119 -> 578 MiB in this storm.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from tests.conftest import OtlpSink, SidecarProcess, free_port
from tests.unit.test_sidecar_receiver import request

pytestmark = pytest.mark.integration

STORM_S = 15.0
SENDERS = 4
PROTOBUF = "application/x-protobuf"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def grpc_sender(target: str, bodies: list[bytes], until: float, answers: dict[str, int], lock: threading.Lock) -> None:
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(LOGS_EXPORT_METHOD)
        i = 0
        while time.monotonic() < until:
            try:
                export(bodies[i % len(bodies)], timeout=10)
                answer = "OK"
            except grpc.RpcError as exc:
                answer = exc.code().name
            i += 1
            with lock:
                answers[answer] = answers.get(answer, 0) + 1


def http_sender(port: int, bodies: list[bytes], until: float, answers: dict[str, int], lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while time.monotonic() < until:
        try:
            connection.request("POST", "/v1/logs", bodies[i % len(bodies)], {"Content-Type": PROTOBUF})
            response = connection.getresponse()
            response.read()
            answer = str(response.status)
            if response.will_close:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            answer = type(exc).__name__
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i += 1
        with lock:
            answers[answer] = answers.get(answer, 0) + 1
    connection.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rss_stays_flat_during_a_refusal_storm(protocol: str, rule_bundle: Path, tmp_path: Path) -> None:
    sink = OtlpSink(free_port())  # not started: the downstream is down until the storm is over
    config = {
        "forward": {"endpoint": sink.endpoint, "queue_max_records": 10, "timeout_s": 1,
                    "retry": {"initial_backoff_s": 0.2, "max_backoff_s": 0.5}},
        "sessions": {"inactivity_timeout_s": 0.1},
        "traces": {"enabled": False},
        "scoring": {"bundle": str(rule_bundle), "batch_timeout_ms": 5},
        "telemetry": {"log_format": "json"},
    }
    sidecar = SidecarProcess(config, tmp_path).start()
    try:
        assert _grpc_once(sidecar.grpc_target, request(20, "held while the downstream is down")) == "OK"
        deadline = time.monotonic() + 10
        while "queue full" not in sidecar.get("/readyz")[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "queue full" in sidecar.get("/readyz")[1]
        time.sleep(0.5)
        assert sidecar.process is not None
        idle = rss_mib(sidecar.process.pid)

        big = request(1000, "x" * 150)  # about 160 KB
        malformed = b"\x0a\xff\xff\xff\xff\x0f" + big  # a first field whose length runs past the end
        bodies = [big, big, big, malformed]
        answers: dict[str, int] = {}
        lock = threading.Lock()
        until = time.monotonic() + STORM_S
        if protocol == "grpc":
            senders = [threading.Thread(target=grpc_sender, args=(sidecar.grpc_target, bodies, until, answers, lock))
                       for _ in range(SENDERS)]
        else:
            senders = [threading.Thread(target=http_sender, args=(sidecar.http_port, bodies, until, answers, lock))
                       for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        peak = idle
        while any(sender.is_alive() for sender in senders):
            peak = max(peak, rss_mib(sidecar.process.pid))
            time.sleep(0.1)

        refused, invalid = ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT") if protocol == "grpc" else ("503", "400")
        assert set(answers) == {refused, invalid}, answers
        assert answers[refused] > 1000 and answers[invalid] > 300, answers
        assert peak <= 1.5 * idle, f"RSS {idle:.0f} MiB idle -> {peak:.0f} MiB peak under {answers}"

        sink.start()  # the downstream is back: what was held is delivered, new requests are taken again
        sink.wait_for_records(20)
        deadline = time.monotonic() + 10
        while _grpc_once(sidecar.grpc_target, request(1, "after the storm")) != "OK":
            assert time.monotonic() < deadline, "still refusing after the downstream came back"
            time.sleep(0.2)
        sink.wait_for_records(21)
        assert sidecar.stop() == 0
    finally:
        sidecar.stop()
        sink.stop()


def _grpc_once(target: str, body: bytes) -> Any:
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"
