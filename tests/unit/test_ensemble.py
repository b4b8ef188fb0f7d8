"""Seed ensembles: unit-free members, the served graph, the bundle round trip, member 0 = the single model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from otel_logbert.bundle import load_bundle
from otel_logbert.cli import main
from otel_logbert.errors import BundleError, UserError
from otel_logbert.models.ensemble import SeedEnsemble
from otel_logbert.models.registry import build_model, make_config
from otel_logbert.scoring.onnx import OnnxScorer
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.data import read_sessions, split_normal
from otel_logbert.training.ensemble import MIN_SCALE, combine, member_seed, member_units
from otel_logbert.training.trainer import load_model, train_model

ROOT = Path(__file__).resolve().parents[2]
HDFS = ROOT.parent / "shared" / "datasets" / "hdfs"
QUICK = ["--epochs", "2", "--set", "max_len=32", "--set", "d_model=32", "--set", "n_layers=1",
         "--set", "n_heads=2", "--set", "d_ff=64", "--quiet", "--calibration", "quantile"]


def test_member_units_are_median_and_distance_to_q95():
    scores = np.arange(101, dtype=float)  # median 50, q95 95
    assert member_units([scores, 2 * scores + 1]) == [(50.0, 45.0), (101.0, 90.0)]
    assert member_units([np.ones(10)]) == [(1.0, MIN_SCALE)]  # constant scores: no division by zero


def test_combine_is_the_mean_unit_free_score():
    a, b = np.array([50.0, 95.0, 140.0]), np.array([101.0, 191.0, 281.0])
    np.testing.assert_allclose(combine([a, b], [(50.0, 45.0), (101.0, 90.0)]), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="2 members' scores but 1 units"):
        combine([a, b], [(0.0, 1.0)])


def test_member_seeds_start_at_the_single_models_seed():
    assert [member_seed(7, i) for i in range(3)] == [7, 1007, 2007]


@pytest.mark.parametrize("model_name", ["fastlogad", "logbert"])
def test_ensemble_graph_is_the_mean_of_its_members(model_name):
    config = make_config(model_name, {"vocab_size": 12, "max_len": 16, "d_model": 16, "n_layers": 1,
                                      "n_heads": 2, "d_ff": 32})
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model(model_name, config).eval())
    ensemble = SeedEnsemble(members).eval()
    ensemble.set_units([(0.5, 2.0), (-1.0, 4.0)])
    tokens = torch.randint(4, 12, (5, 9))
    tokens[-1, 5:] = 0
    with torch.no_grad():
        score, evidence = ensemble(tokens)
        (s0, e0), (s1, e1) = members[0](tokens), members[1](tokens)
    expected = combine([s0.numpy(), s1.numpy()], [(0.5, 2.0), (-1.0, 4.0)])
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(evidence.numpy(), ((e0 + e1) / 2).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="1 units for 2 members"):
        ensemble.set_units([(0.0, 1.0)])


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hdfs") / "train.txt"
    path.write_text("".join((HDFS / "train_normal.txt").read_text().splitlines(True)[:300]))
    return path


@pytest.fixture(scope="module")
def ensemble_bundle(train_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "bundle"
    assert main(["train", "--model", "fastlogad", "--train", str(train_file), "--out", str(out), "--seed", "3",
                 "--set", "ensemble=2", *QUICK]) == 0
    return out


def test_ensemble_bundle_round_trip_and_onnx(ensemble_bundle, train_file):
    bundle = load_bundle(ensemble_bundle, require_onnx=True)  # export's parity check passed on the ensemble
    assert bundle.config["ensemble_members"] == 2
    about = bundle.metadata["ensemble"]
    assert about["members"] == 2 and about["seeds"] == [3, 1003] and len(about["units"]) == 2
    assert len(bundle.threshold["detection"]["members"]) == 2
    model = load_model(bundle)
    assert isinstance(model, SeedEnsemble) and len(model.members) == 2
    sessions = read_sessions(train_file).sessions
    _, val = split_normal(sessions, 0.2, 3)
    encoded = [bundle.vocab.encode(s) for s in val]
    torch_scores = [r.score for r in TorchScorer(model, model_name="fastlogad", model_version="").score(encoded)]
    onnx_scores = [r.score for r in OnnxScorer(bundle).score(encoded)]
    # the threshold was set on the same graph's validation scores: the served scores reproduce them
    np.testing.assert_allclose(torch_scores, bundle.threshold["validation_scores"], atol=1e-5)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4, atol=1e-4)
    assert bundle.threshold["quantile_value"] == pytest.approx(max(torch_scores), abs=1e-5)  # fastlogad: max


def test_member_zero_is_the_single_model_of_the_same_seed(ensemble_bundle, train_file, tmp_path):
    single = tmp_path / "single"
    assert main(["train", "--model", "fastlogad", "--train", str(train_file), "--out", str(single), "--seed", "3",
                 "--no-export", *QUICK]) == 0
    one, both = load_file(str(single / "weights.safetensors")), load_file(str(ensemble_bundle / "weights.safetensors"))
    assert set(both) == {f"members.{i}.{k}" for i in (0, 1) for k in one} | {"loc", "scale"}
    assert all(np.array_equal(both[f"members.0.{k}"], one[k]) for k in one)
    assert not all(np.array_equal(both[f"members.1.{k}"], one[k]) for k in one)


def test_pot_serves_one_model_and_says_so(train_file, caplog):
    sessions = read_sessions(train_file).sessions[:60]
    model, _, threshold, metadata = train_model(
        "fastlogad", sessions, epochs=1, progress=False,
        overrides={"ensemble": 3, "calibration": "pot", "max_len": 32, "d_model": 16, "n_layers": 1, "n_heads": 2,
                   "d_ff": 32, "min_steps": 0})
    assert not isinstance(model, SeedEnsemble) and threshold["calibration"] == "pot"
    assert metadata["training"]["ensemble"] == 1 and "ensemble" not in metadata
    assert "calibration pot serves one model: ensemble 3 is not used" in caplog.text


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_bad_ensemble_option_is_one_line_error(value, train_file):
    with pytest.raises(UserError, match=r"training option ensemble=.*: expected an integer >= 1"):
        train_model("fastlogad", read_sessions(train_file).sessions[:20], epochs=1, progress=False,
                    overrides={"ensemble": value})


def test_bad_member_count_in_bundle(ensemble_bundle, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(ensemble_bundle, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "ensemble_members": "two"}))
    with pytest.raises(BundleError, match=r"config.json: ensemble_members 'two': expected an integer >= 1"):
        load_model(load_bundle(broken))
