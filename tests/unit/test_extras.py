"""The one-line error of a command whose optional dependencies (pyproject extras) are missing.

The development venv has every extra installed, so "missing" is made here by hiding modules from
``importlib.util.find_spec`` and from the import system (``sys.modules[name] = None`` makes ``import``
raise ``ModuleNotFoundError`` as for an absent package). tests/artefacts/test_core_install.py checks
the same messages in a real venv without the extras.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from otel_logbert import cli, extras


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch):
    def hide_modules(*names: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name.split(".")[0] in names else real(name, *a))
        for name in names:
            monkeypatch.setitem(__import__("sys").modules, name, None)

    return hide_modules


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_eval_plot_without_matplotlib_names_the_plot_extra(hide, capsys, tmp_path: Path) -> None:
    hide("matplotlib")
    argv = ["eval", "--bundle", str(tmp_path), "--normal", "n.txt", "--abnormal", "a.txt", "--plot", "p.png"]
    assert cli.main(argv) == 2
    assert one_error_line(capsys) == (
        "otel-logbert eval: error: eval --plot needs the 'plot' extra (matplotlib not installed): "
        "pip install 'otel-logbert[plot]'")


def test_train_without_torch_names_the_train_extra_before_reading_anything(hide, capsys, tmp_path: Path) -> None:
    hide("torch")
    argv = ["train", "--model", "fastlogad", "--train", str(tmp_path / "absent.txt"), "--out", str(tmp_path / "b")]
    assert cli.main(argv) == 2
    assert one_error_line(capsys) == (
        "otel-logbert train: error: train needs the 'train' extra (torch not installed): "
        "pip install 'otel-logbert[train]'")
    assert not (tmp_path / "b").exists()


def test_both_extras_missing_are_named_in_one_install_command(hide) -> None:
    hide("torch", "matplotlib")
    with pytest.raises(extras.MissingExtraError, match=r"'train' and 'plot' extras .*otel-logbert\[train,plot\]'$"):
        extras.require(("train", "plot"), "demo")


def test_a_lazy_import_of_an_extra_module_becomes_the_same_message(
    hide, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's safety net: a command importing an extra's module without ``require`` first (here
    ``export`` with its check switched off, so its ``import torch`` fails for real)."""
    import sys

    from otel_logbert.commands import export

    hide("torch")
    monkeypatch.setattr(export, "require", lambda *args: None)
    monkeypatch.delitem(sys.modules, "otel_logbert.export", raising=False)
    assert cli.main(["export", "--bundle", str(tmp_path)]) == 2
    assert one_error_line(capsys) == (
        "otel-logbert export: error: export needs the 'train' extra (torch not installed): "
        "pip install 'otel-logbert[train]'")
    assert extras.missing_extra(ModuleNotFoundError("x", name="yaml"), "eval") is None


def test_serve_needs_no_extra(hide, capsys) -> None:
    hide("torch", "matplotlib", "sklearn", "onnx", "onnxscript", "safetensors")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out
