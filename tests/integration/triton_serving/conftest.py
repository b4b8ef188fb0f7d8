"""Fixtures for the Triton tests: a real tritonserver on loopback ports, serving repositories that
``write_triton_repository`` generated from real bundles.

- ``triton_installed``: makes sure tritonclient, the tritonserver binary (nvidia-pytriton wheel) and
  the python-backend environment are there, running ``scripts/setup-triton.sh`` when they are not
  (it installs from PyPI). A failure fails the tests: they are never skipped.
- ``hdfs_bundle``: FastLogAD trained for 2 epochs on the first ``TRAIN_SESSIONS`` normal HDFS
  sessions, ``max_len`` lowered to 32 so that real dev sessions are chunked, exported to ONNX.
- ``hdfs_dev_sessions``: real dev sessions (normal and abnormal, all lengths, the longest included),
  encoded with the bundle's vocabulary.
- ``triton_repository``: one python-backend repository with the HDFS model and the rule bundle
  (``tests/conftest.py``'s ``rule_bundle``), for the sidecar test.
- ``triton_server``: one server for the session; ``start_triton``: a private server (a test that
  kills it, or needs other flags).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
HDFS = REPO_ROOT.parent / "shared" / "datasets" / "hdfs"
TRAIN_SESSIONS = 400
MAX_LEN = 32
DEV_SESSIONS_EACH = 150


@pytest.fixture(scope="session")
def triton_installed() -> None:
    from otel_logbert.triton.server import TritonServerError, find_tritonserver, model_environment

    def present() -> bool:
        try:
            import tritonclient.grpc  # noqa: F401

            find_tritonserver()
            model_environment()
            return True
        except (ImportError, TritonServerError):
            return False

    if present():
        return
    env = {**os.environ, "VENV": sys.prefix}
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup-triton.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not present():
        pytest.fail(f"scripts/setup-triton.sh could not install Triton:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def hdfs_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from otel_logbert.export import export_onnx
    from otel_logbert.training.data import read_sessions
    from otel_logbert.training.trainer import save_trained, train_model

    sessions = read_sessions(HDFS / "train_normal.txt").sessions[:TRAIN_SESSIONS]
    model, vocab, threshold, metadata = train_model(
        "fastlogad", sessions, epochs=2, progress=False, overrides={"max_len": MAX_LEN}
    )
    out = tmp_path_factory.mktemp("bundles") / "hdfs-fastlogad"
    save_trained(out, "fastlogad", model, vocab, threshold, metadata)
    export_onnx(out)
    return out


@pytest.fixture(scope="session")
def hdfs_dev_sessions(hdfs_bundle: Path) -> list[list[int]]:
    """Normal and abnormal dev sessions, the longest of each file first (longer than max_len)."""
    from otel_logbert.bundle import load_bundle
    from otel_logbert.training.data import read_sessions

    vocab = load_bundle(hdfs_bundle).vocab
    picked: list[list[str]] = []
    for name in ("dev_normal.csv", "dev_abnormal.csv"):
        sessions = read_sessions(HDFS / name).sessions
        longest = max(sessions, key=len)
        picked += [longest, *sessions[:DEV_SESSIONS_EACH]]
    encoded = [vocab.encode(s) for s in picked]
    assert max(len(s) for s in encoded) > MAX_LEN, "the sample must hold sessions that get chunked"
    return encoded


@pytest.fixture(scope="session")
def triton_repository(
    triton_installed: None, hdfs_bundle: Path, rule_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from otel_logbert.triton.repository import write_triton_repository

    repo = tmp_path_factory.mktemp("triton") / "model_repository"
    write_triton_repository(hdfs_bundle, repo, "python", preferred_batch_sizes=(8, 32))
    write_triton_repository(rule_bundle, repo, "python")
    return repo


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from otel_logbert.triton.server import TritonServer

    server = TritonServer(triton_repository, tmp_path_factory.mktemp("tritonserver"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_triton(triton_installed: None, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """``start_triton(repository, *extra_args)``: a private tritonserver, stopped after the test."""
    from otel_logbert.triton.server import TritonServer

    servers: list[TritonServer] = []

    def start(repository: Path, *extra_args: str) -> TritonServer:
        server = TritonServer(repository, tmp_path / f"tritonserver-{len(servers)}", extra_args=list(extra_args))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
