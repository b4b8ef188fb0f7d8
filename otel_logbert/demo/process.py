"""The real ``otel-logbert serve`` in a child process, configured for the demo.

    with SidecarProcess(bundle_dir, forward=receiver.endpoint, workdir=out) as sidecar:
        sidecar.grpc_endpoint        # where the services' OTLP exporter sends logs
        ...
    sidecar.returncode               # 0 after a clean SIGTERM shutdown (which flushes everything)

The config is written to ``<workdir>/sidecar.yaml`` and the process's output to
``<workdir>/sidecar.log``; both stay for the report. Only localhost ports are used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from otel_logbert.errors import UserError

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
# Sessions close this long after their trace's last record: the demo's requests finish within
# milliseconds of wall time, and a short timeout keeps the end-of-stream wait short.
INACTIVITY_TIMEOUT_S = 1.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(bundle: Path, forward: str, grpc_port: int, telemetry_port: int) -> dict[str, Any]:
    """The sidecar YAML (as a dict) the demo runs: trace-keyed sessions, the embedded ONNX scorer,
    enriched logs and span events both to ``forward`` over OTLP/gRPC."""
    return {
        "receivers": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}, "http": {"endpoint": None}},
        "forward": {"endpoint": forward, "protocol": "grpc", "retry": {"initial_backoff_s": 0.1}},
        "traces": {"enabled": True, "endpoint": forward, "protocol": "grpc"},
        "sessions": {"key": "trace_id", "inactivity_timeout_s": INACTIVITY_TIMEOUT_S, "max_age_s": 60},
        "scoring": {"scorer": "embedded", "bundle": str(bundle), "threshold": "static"},
        "telemetry": {"endpoint": f"127.0.0.1:{telemetry_port}", "log_format": "text"},
    }


class SidecarProcess:
    """Starts ``python -m otel_logbert.cli serve`` and waits for ``/readyz``; stops it with SIGTERM.

    ``start`` raises ``UserError`` (with the tail of the sidecar's log) when it exits early or is not
    ready within ``READY_TIMEOUT_S``.
    """

    def __init__(self, bundle: Path, forward: str, workdir: Path) -> None:
        self.grpc_port, self.telemetry_port = free_port(), free_port()
        self.config = demo_config(bundle, forward, self.grpc_port, self.telemetry_port)
        self.config_path = workdir / "sidecar.yaml"
        self.log_path = workdir / "sidecar.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self) -> SidecarProcess:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        # Our own settings win: environment overrides of the sidecar's config are not inherited.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LOGBERT_")}
        env["PYTHONUNBUFFERED"] = "1"
        args = [sys.executable, "-m", "otel_logbert.cli", "--log-level", "WARNING", "serve",
                "--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"the sidecar exited with code {self.process.returncode}: {self._log_tail()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise UserError(f"the sidecar was not ready within {READY_TIMEOUT_S:.0f}s: {self._log_tail()}")

    def stop(self) -> int:
        """SIGTERM (the sidecar flushes open sessions), wait, and return the exit code."""
        if self.process is None:
            return -1
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.telemetry_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
