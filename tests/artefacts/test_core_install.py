"""``pip install .`` with no extras: a torch-free, matplotlib-free install that serves a real bundle,
and whose training / plotting commands stop with one line naming the extra to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.artefacts.conftest import EXTRA_ONLY_MODULES, installed_modules, run
from tests.artefacts.serving import assert_scores_traffic, sidecar_config
from tests.conftest import OtlpSink, SidecarProcess

pytestmark = pytest.mark.packaging


def test_core_install_has_onnxruntime_and_no_extra_dependency(core_venv: Path) -> None:
    assert installed_modules(core_venv, EXTRA_ONLY_MODULES) == []
    assert installed_modules(core_venv, ("onnxruntime", "drain3", "grpc")) == ["onnxruntime", "drain3", "grpc"]


def test_core_install_serves_a_trained_bundle_over_otlp(
    core_venv: Path, fastlogad_bundle: Path, otlp_sink: OtlpSink, tmp_path: Path
) -> None:
    sidecar = SidecarProcess(sidecar_config(otlp_sink, fastlogad_bundle), tmp_path,
                             program=(str(core_venv / "otel-logbert"), "serve"))
    try:
        sidecar.start(timeout_s=60)
        assert_scores_traffic(sidecar, otlp_sink, fastlogad_bundle)
    finally:
        assert sidecar.stop() == 0, sidecar.stderr()


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--model", "fastlogad", "--train", "sessions.txt", "--out", "b"],
     "otel-logbert train: error: train needs the 'train' extra (torch not installed): "
     "pip install 'otel-logbert[train]'"),
    (["export", "--bundle", "b"],
     "otel-logbert export: error: export needs the 'train' extra (torch not installed): "
     "pip install 'otel-logbert[train]'"),
    (["eval", "--bundle", "b", "--normal", "n.txt", "--abnormal", "a.txt", "--plot", "p.png"],
     "otel-logbert eval: error: eval --plot needs the 'train' and 'plot' extras (torch, matplotlib not "
     "installed): pip install 'otel-logbert[train,plot]'"),
])
def test_commands_needing_an_extra_fail_with_one_line_naming_it(
    core_venv: Path, tmp_path: Path, argv: list[str], expected: str
) -> None:
    done = run([str(core_venv / "otel-logbert"), *argv], check=False, cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, expected)
    assert list(tmp_path.iterdir()) == []  # failed before touching anything
