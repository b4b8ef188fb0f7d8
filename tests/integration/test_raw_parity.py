"""Raw HDFS lines through ``otel-logbert serve`` get the verdicts key-session ``eval`` gives the same
sessions (``benchmarks/raw_parity.py`` on a subset: a real training, a real sidecar process, OTLP/gRPC)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
QUICK = ["--epochs", "2", "--set", "max_len=32", "--set", "d_model=32", "--set", "n_layers=1", "--set", "n_heads=2",
         "--set", "d_ff=64", "--calibration", "quantile", "--set", "threshold_quantile=0.99"]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("raw_parity", ROOT / "benchmarks" / "raw_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_raw_lines_through_serve_match_key_session_eval(tmp_path):
    pytest.importorskip("torch")
    result = load_benchmark().run_parity(tmp_path, train_sessions=600, dev_normal=300, dev_abnormal=150,
                                         train_args=QUICK, datasets=DATASETS)
    assert result["calibration"] == "quantile"
    assert result["complete"] and result["delivered_records"] == result["lines"]
    assert result["record_status"] == {"scored": result["lines"]}
    assert result["blocks_scored"] == result["blocks"] == 450 and result["blocks_split"] == 0
    assert result["disagreements"] == 0
    assert result["raw_recall"] == result["key_recall"] == pytest.approx(result["eval_recall"])
    assert result["raw_fpr"] == result["key_fpr"] == pytest.approx(result["eval_fpr"])
    assert result["raw_recall"] > 0  # a model that flags nothing would agree trivially
