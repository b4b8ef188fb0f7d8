"""``python -m build`` makes an sdist and a wheel that ``twine check`` accepts; the wheel installs into
a fresh venv whose ``otel-logbert`` runs. The version comes from ``otel_logbert.__version__`` only."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from otel_logbert import __version__
from tests.artefacts.conftest import fresh_venv, run
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.packaging


def test_build_makes_one_sdist_and_one_wheel_of_the_package_version(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"otel_logbert-{__version__}-py3-none-any.whl", f"otel_logbert-{__version__}.tar.gz"]
    with zipfile.ZipFile(dist / names[0]) as wheel:
        files = wheel.namelist()
        metadata = wheel.read(f"otel_logbert-{__version__}.dist-info/METADATA").decode()
    assert "otel_logbert/configs/fastlogad.yaml" in files
    assert not [f for f in files if f.startswith("tests/")]
    assert f"Version: {__version__}\n" in metadata
    assert "Provides-Extra: train" in metadata and "Provides-Extra: plot" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if any(name in r for name in ("torch", "matplotlib"))], core


def test_twine_check_passes(dist: Path) -> None:
    done = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))])
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, tmp_path: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    bin_dir = fresh_venv(tmp_path / "venv", str(wheel))
    assert run([str(bin_dir / "otel-logbert"), "--version"]).stdout.strip() == f"otel-logbert {__version__}"
    help_text = run([str(bin_dir / "otel-logbert"), "serve", "--help"]).stdout
    assert "--config" in help_text


def test_the_chart_app_version_is_the_package_version() -> None:
    """Helm cannot read Python: the chart's appVersion (its default image tag) must follow __version__."""
    chart = yaml.safe_load((REPO_ROOT / "helm" / "otel-logbert" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
