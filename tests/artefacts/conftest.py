"""Fixtures for the packaging tests: fresh virtual environments that install the project the way a
user would (``pip install .``, or the wheel ``python -m build`` makes), never the development venv.

pip runs with this machine's configuration (its index, find-links and cache), so the installs are
quick and need no compiler; nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# The modules a plain `pip install otel-logbert` must not bring (they belong to the extras).
EXTRA_ONLY_MODULES = ("torch", "matplotlib", "onnx", "onnxscript", "safetensors", "sklearn")


def clean_env() -> dict[str, str]:
    """The environment for a fresh venv's programs: no PYTHONPATH (the repository must not leak in),
    no OTEL_* settings of the caller."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("OTEL_")}


def run(argv: list[str], timeout_s: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """``argv`` with ``clean_env()``; on failure the assertion carries stdout and stderr."""
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if check:
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def fresh_venv(path: Path, *install: str) -> Path:
    """A new venv at ``path`` (from the interpreter running the tests) with ``pip install <install>``;
    returns its ``bin`` directory."""
    run([sys.executable, "-m", "venv", str(path)])
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *install])
    return path / "bin"


def installed_modules(bin_dir: Path, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` the venv's python can find."""
    code = f"import importlib.util as u; print(' '.join(m for m in {modules!r} if u.find_spec(m)))"
    return run([str(bin_dir / "python"), "-c", code]).stdout.split()


@pytest.fixture(scope="session")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install .`` of the repository, no extras: the ``bin`` directory of that venv."""
    return fresh_venv(tmp_path_factory.mktemp("venvs") / "core", str(REPO_ROOT))


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (sdist, then the wheel from the sdist) into a fresh directory."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)])
    return out
