"""``train`` / ``export`` / ``eval`` on real HDFS data, ONNX parity, determinism and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from otel_logbert.bundle import MANIFEST_FILE, load_bundle
from otel_logbert.cli import main
from otel_logbert.errors import BundleError
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.data import read_sessions
from otel_logbert.training.trainer import load_model

ROOT = Path(__file__).resolve().parents[2]
HDFS = ROOT.parent / "shared" / "datasets" / "hdfs"
HDFS_RAW = ROOT.parent / "shared" / "datasets" / "hdfs_raw"
# Small and quick, but the real code path: max_len 32 forces chunking of long anomalous sessions.
QUICK = ["--epochs", "2", "--set", "max_len=32", "--set", "d_model=32", "--set", "n_layers=1",
         "--set", "n_heads=2", "--set", "d_ff=64", "--quiet"]


@pytest.fixture(scope="module")
def hdfs_subset(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hdfs")
    (out / "train.txt").write_text("".join((HDFS / "train_normal.txt").read_text().splitlines(True)[:600]))
    for name in ("dev_normal.csv", "dev_abnormal.csv"):
        lines = (HDFS / name).read_text().splitlines(True)
        long_rows = [row for row in lines[151:] if len(row.split(",")[1].split()) > 40][:5]
        (out / name).write_text("".join(lines[:151] + long_rows))
    return {"train": out / "train.txt", "normal": out / "dev_normal.csv", "abnormal": out / "dev_abnormal.csv"}


@pytest.fixture(scope="module", params=["fastlogad", "logbert", "loganom"])
def bundle_dir(request, hdfs_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    assert main(["train", "--model", request.param, "--train", str(hdfs_subset["train"]), "--out", str(out),
                 *QUICK]) == 0
    return out


def test_bundle_is_json_onnx_safetensors(bundle_dir):
    names = {p.name for p in bundle_dir.iterdir()}
    assert {"bundle.json", "config.json", "vocab.json", "threshold.json", "metadata.json",
            "weights.safetensors", "model.onnx", "baselines.json"} <= names
    assert not any(n.endswith((".pt", ".pkl", ".pickle", ".bin")) for n in names)
    bundle = load_bundle(bundle_dir, require_onnx=True)
    assert bundle.static_threshold == json.loads((bundle_dir / "threshold.json").read_text())["threshold"]


def test_onnx_matches_pytorch_on_real_sessions(bundle_dir, hdfs_subset):
    bundle = load_bundle(bundle_dir)
    sessions = read_sessions(hdfs_subset["normal"]).sessions + read_sessions(hdfs_subset["abnormal"]).sessions
    encoded = [bundle.vocab.encode(s) for s in sessions]
    assert max(map(len, encoded)) > bundle.max_len  # chunking is exercised
    onnx = OnnxScorer(bundle).score(encoded)
    torch_scores = TorchScorer(load_model(bundle), model_name=bundle.model, model_version="").score(encoded)
    np.testing.assert_allclose([r.score for r in onnx], [r.score for r in torch_scores], rtol=1e-4, atol=1e-4)
    assert [r.unexpected for r in onnx] == [r.unexpected for r in torch_scores]


def test_eval_writes_metrics_json_and_plot(bundle_dir, hdfs_subset, tmp_path, capsys):
    out_json, out_png = tmp_path / "m.json", tmp_path / "scores.png"
    assert main(["eval", "--bundle", str(bundle_dir), "--normal", str(hdfs_subset["normal"]), "--abnormal",
                 str(hdfs_subset["abnormal"]), "--json", str(out_json), "--plot", str(out_png)]) == 0
    metrics = json.loads(out_json.read_text())
    for key in ("precision", "recall", "f1", "auroc", "aupr", "tpr", "fpr", "threshold", "tp", "fp", "tn", "fn",
                "scoring_seconds", "sessions_per_second", "f1_paper_mix"):
        assert key in metrics
    assert metrics["normal_sessions"] == len(read_sessions(hdfs_subset["normal"]).sessions) == 151
    assert metrics["anomalous_sessions"] == len(read_sessions(hdfs_subset["abnormal"]).sessions) == 155
    assert out_png.stat().st_size > 10_000 and out_png.read_bytes()[:4] == b"\x89PNG"
    assert (bundle_dir / "metrics.json").exists()
    assert set(metrics["baselines"]) == {"new-event", "counts-pca"}  # measured beside the model by default
    assert metrics["baselines"]["new-event"]["normal_sessions"] == 151
    out = capsys.readouterr().out
    assert "F1 at paper mix" in out and "counts-pca" in out


def test_training_is_deterministic_for_a_seed(hdfs_subset, tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--model", "fastlogad", "--train", str(hdfs_subset["train"]), "--out",
                     str(tmp_path / name), "--seed", "3", "--no-export", *QUICK]) == 0
    a, b = (load_file(str(tmp_path / n / "weights.safetensors")) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ta, tb = (json.loads((tmp_path / n / "threshold.json").read_text()) for n in ("a", "b"))
    assert ta["threshold"] == tb["threshold"]


def test_raw_log_training_puts_drain_state_in_bundle(tmp_path):
    out = tmp_path / "raw"
    assert main(["train", "--model", "fastlogad", "--train", str(HDFS_RAW / "HDFS_5k.log"), "--session-regex",
                 r"blk_-?\d+", "--out", str(out), *QUICK]) == 0
    bundle = load_bundle(out, require_onnx=True)
    assert bundle.drain_state is not None and len(bundle.vocab.keys) >= 10
    assert json.loads((out / "metadata.json").read_text())["sessions_in_file"] == 110


# -- bad input: one line naming file (and line), exit 2, no traceback --------------------------------------

def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_logbert.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("content", "expected"), [
    ("", "empty file"),
    ("5 5 22\n5 x 11\n", ":2: event id 'x' is not an integer"),
    ("id,sequence\nblk_1,5 5 22\nblk_2,5 22,extra\n", ":3: expected 2 CSV fields"),
    ("id,sequence\n", "no sessions found"),
])
def test_bad_training_files(tmp_path, content, expected):
    path = tmp_path / "sessions.txt"
    path.write_text(content)
    result = run_cli(["train", "--model", "fastlogad", "--train", str(path), "--out", str(tmp_path / "b")])
    assert result.returncode == 2
    assert expected in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_training_file(tmp_path):
    result = run_cli(["train", "--model", "logbert", "--train", str(tmp_path / "nope.txt"), "--out", str(tmp_path)])
    assert result.returncode == 2 and "nope.txt: file not found" in result.stderr


def test_bundle_errors(bundle_dir, tmp_path, hdfs_subset):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in bundle_dir.iterdir():
        if p.name != "vocab.json":
            (broken / p.name).write_bytes(p.read_bytes())
    with pytest.raises(BundleError, match=r"vocab.json: missing bundle file"):
        load_bundle(broken)
    (broken / "vocab.json").write_bytes((bundle_dir / "vocab.json").read_bytes())
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = run_cli(["eval", "--bundle", str(broken), "--normal", str(hdfs_subset["normal"]),
                      "--abnormal", str(hdfs_subset["abnormal"])])
    assert result.returncode == 2 and "format version 99 is not supported" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(["eval", "--bundle", str(tmp_path / "absent"), "--normal", "x", "--abnormal", "y"])
    assert result.returncode == 2 and "bundle directory not found" in result.stderr


def test_learn_file_with_parser_state_trains_a_raw_log_bundle(tmp_path):
    """A file from the sidecar's learn mode: key lines (empty bodies are key 0) + <stem>.drain3.json."""
    from otel_logbert.parsing.drain import EMPTY_KEY, LogParser

    parser = LogParser(masking="hdfs")
    lines = (HDFS_RAW / "HDFS_2k.log").read_text().splitlines()[:400]
    keys = [parser.parse(line.split(": ", 1)[-1]).key for line in lines]
    sessions = [" ".join(keys[i : i + 8] + [EMPTY_KEY]) for i in range(0, len(keys), 8)]
    (tmp_path / "learned.txt").write_text("\n".join(sessions) + "\n")
    parser.save(tmp_path / "learned.drain3.json")
    out = tmp_path / "bundle"
    assert main(["train", "--model", "fastlogad", "--train", str(tmp_path / "learned.txt"), "--out", str(out),
                 "--no-export", *QUICK]) == 0
    assert load_bundle(out).drain_state == parser.to_json()
