"""BERT-LogAnom's session score: the top-k MLKP term does not dilute one bad key over a long session."""

from __future__ import annotations

import math

import pytest
import torch

from otel_logbert.errors import UserError
from otel_logbert.models.loganom import LogAnom, LogAnomConfig, mlkp_term
from otel_logbert.models.registry import make_config
from otel_logbert.training.config import load_training_config


def one_bad_key(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-key losses of a session of ``length`` keys, all 0.1 but one 5.0, padded to 130 with zeros."""
    ce = torch.zeros(1, 130)
    ce[0, :length] = 0.1
    ce[0, length // 2] = 5.0
    real = torch.zeros(1, 130, dtype=torch.bool)
    real[0, :length] = True
    return ce, real


def test_topk_and_max_do_not_dilute_one_bad_key_but_the_mean_does():
    short, long = one_bad_key(5), one_bad_key(120)
    assert mlkp_term(*short, "topk", 3).item() == pytest.approx(mlkp_term(*long, "topk", 3).item())
    assert mlkp_term(*long, "topk", 3).item() == pytest.approx((5.0 + 0.1 + 0.1) / 3)
    assert mlkp_term(*long, "max", 1).item() == pytest.approx(5.0)
    assert mlkp_term(*short, "mean", 1).item() == pytest.approx(5.4 / 5)
    assert mlkp_term(*long, "mean", 1).item() == pytest.approx(16.9 / 120)  # diluted by the length


def test_topk_of_a_session_shorter_than_k_is_the_mean_of_its_keys():
    ce, real = one_bad_key(2)
    assert mlkp_term(ce[:, :2], real[:, :2], "topk", 5).item() == pytest.approx((5.0 + 0.1) / 2)


def test_the_packaged_config_scores_the_graded_surprise_and_old_bundles_keep_the_mean():
    model_values, _ = load_training_config("loganom", None)
    assert model_values["score"] == "graded"
    assert model_values["lam"] == 0.2  # the paper's VHM weight
    # a bundle written before the option existed has no "score" in config.json: the paper's mean
    assert make_config("loganom", {"vocab_size": 10}).score == "mean"


def test_unknown_score_is_a_clear_error():
    with pytest.raises(UserError, match="loganom score 'median'"):
        LogAnom(LogAnomConfig(vocab_size=10, score="median"))


def test_graded_surprise_adds_nothing_inside_the_top_g_and_a_lot_for_a_never_seen_key():
    from otel_logbert.models.loganom import graded_surprise

    ranks = torch.tensor([[0, 2, 3, 1 << 20, 0]])  # g = 3: ranks 0 and 2 inside, 3 just outside, UNK
    real = torch.tensor([[True, True, True, True, False]])
    value = graded_surprise(ranks, real, torch.tensor(3)).item()
    assert value == pytest.approx(math.log(4 / 3) + math.log((2**20 + 1) / 3), rel=1e-5)
    # the same one bad key in a session ten times as long scores the same (a sum, not a mean)
    long = torch.cat([ranks[:, :4], torch.zeros(1, 40, dtype=torch.int64)], dim=1)
    assert graded_surprise(long, long >= 0, torch.tensor(3)).item() == pytest.approx(value, rel=1e-5)
