"""Run a local ``tritonserver`` (the one inside the nvidia-pytriton wheel) for tests and benchmarks.

The wheel ships Triton 2.51 with only the python backend. It is not a Python dependency of the
project (its pins, numpy<2 among them, would downgrade the whole environment): it is unpacked with
``pip install --no-deps --target <venv>/triton nvidia-pytriton==0.7.0`` by ``scripts/setup-triton.sh``
and only its binaries are used.

How it starts here (``TritonServer`` does all of this):

* ``--backend-directory`` points at a directory holding ``python/`` with ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the ``triton_python_backend_stub`` built for the running
  Python's minor version (the wheel keeps one stub per version in ``python_backend_stubs/``);
* ``LD_LIBRARY_PATH`` = the interpreter's ``LIBDIR`` (libpython for the stub) + the wheel's bundled
  libraries (``nvidia_pytriton.libs``);
* the model environment's ``bin`` first on ``PATH``: the stub ignores ``PYTHONPATH`` and finds
  site-packages (numpy, onnxruntime for ``model.py``) from the ``python3`` it finds on ``PATH``.
  That environment is ``<home>/python-env``, a venv of the same interpreter with ``numpy<2`` and the
  project's onnxruntime version: the stub is compiled against numpy 1.x, and with numpy 2 it hands
  Triton output tensors of the wrong size ("output tensor shape does not match size of output");
* loopback addresses and the ports given (or free ones); metrics off unless a port is given.

Production deployments use NVIDIA's container image instead (see docs/triton.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Where scripts/setup-triton.sh unpacks the wheel; override with OTEL_LOGBERT_TRITON_HOME.
HOME_ENV = "OTEL_LOGBERT_TRITON_HOME"
DEFAULT_HOME = Path(sys.prefix) / "triton"
MODEL_ENV = "python-env"  # under the home: the venv the python-backend stub runs model.py in
PYTRITON_VERSION = "0.7.0"
START_TIMEOUT_S = 60.0


class TritonServerError(RuntimeError):
    """tritonserver is missing, did not start, or exited."""


def triton_home() -> Path:
    """The directory holding ``pytriton/tritonserver`` (see module docstring)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def find_tritonserver(home: Path | None = None) -> Path:
    """Path of the ``tritonserver`` binary. Raises ``TritonServerError`` naming the install step."""
    root = (home or triton_home()) / "pytriton" / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.exists():
        raise TritonServerError(
            f"{binary}: not found; run `bash scripts/setup-triton.sh` (installs nvidia-pytriton=="
            f"{PYTRITON_VERSION} with --no-deps into {triton_home()}) or set {HOME_ENV}"
        )
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_backend_directory(target: Path, home: Path | None = None) -> Path:
    """Fill ``target/python`` with the python backend and the stub for this interpreter's version.

    Returns ``target`` (for ``--backend-directory``). Idempotent.
    """
    root = find_tritonserver(home).parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonServerError(f"{stub}: nvidia-pytriton has no python-backend stub for Python {version}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / name, python_dir / name)
    shutil.copy2(stub, python_dir / stub.name)
    return target


def model_environment(home: Path | None = None) -> Path:
    """The venv the python-backend stub runs ``model.py`` in. Raises ``TritonServerError`` if absent."""
    env = (home or triton_home()) / MODEL_ENV
    if not (env / "bin" / "python3").exists():
        raise TritonServerError(f"{env}: no python environment for the python backend; run "
                                "`bash scripts/setup-triton.sh`")
    return env


def server_environment(home: Path | None = None) -> dict[str, str]:
    """The environment tritonserver and the python-backend stub need (see module docstring)."""
    root = home or triton_home()
    model_bin = model_environment(root) / "bin"
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    libs = [libdir, str(root / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    env["PATH"] = os.pathsep.join([str(model_bin), env.get("PATH", "")])
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


@dataclass
class TritonServer:
    """A tritonserver child process serving ``repository`` on loopback ports.

    ``start()`` returns when ``/v2/health/ready`` answers 200 (every model loaded) or raises
    ``TritonServerError`` with the tail of the server's log. ``stop()`` sends SIGTERM and waits;
    ``kill()`` sends SIGKILL (a crash). ``start()`` after either reuses the same ports, so clients
    reconnect to the same address. The server's output goes to ``log_path``.
    """

    repository: Path
    workdir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    home: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def command(self) -> list[str]:
        backends = prepare_backend_directory(self.workdir / "backends", self.home)
        args = [
            str(find_tritonserver(self.home)),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--exit-on-error=true",
            "--log-verbose=0",
        ]
        if self.metrics_port is None:
            args.append("--allow-metrics=false")
        else:
            args += ["--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}"]
        return args + self.extra_args

    def start(self, timeout_s: float = START_TIMEOUT_S) -> TritonServer:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=server_environment(self.home),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonServerError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.http_ready():
                return self
            time.sleep(0.1)
        self.kill()
        raise TritonServerError(f"tritonserver not ready after {timeout_s:g}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def http_ready(self) -> bool:
        """``GET /v2/health/ready`` answered 200."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its python-backend stubs (a crash, as far as clients can tell)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the stubs go too
        self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
