"""Each model learns the toy grammar: normal sessions score below broken ones (real training, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from toy import anomalous_sessions, normal_sessions, varied_normal_sessions

from otel_logbert.bundle import MODELS
from otel_logbert.models.registry import MODEL_CLASSES
from otel_logbert.parsing.vocabulary import UNK_ID
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.calibration import pot_threshold
from otel_logbert.training.trainer import THRESHOLD_MARGIN, train_model

# The default model size, and batches small enough for a few hundred optimizer steps on 240 sessions.
# The toy grammar is strictly ordered (like request flows in a trace), so the order-sensitive encoder
# setting; HDFS-like interleaved logs use the default (see EncoderConfig.scale_embeddings).
SMALL = {"max_len": 16, "batch_size": 16, "scale_embeddings": False}
EPOCHS = 16


# loganom: the packaged graded score; the other BERT-LogAnom scores: the largest per-key loss and the
# paper's mean over all keys.
VARIANTS = {"logbert": ("logbert", {}), "fastlogad": ("fastlogad", {}), "loganom": ("loganom", {}),
            "loganom-max": ("loganom", {"score": "max"}), "loganom-mean": ("loganom", {"score": "mean"})}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request):
    sessions = normal_sessions(300)
    name, extra = VARIANTS[request.param]
    # the quantile rule: one model per variant (the pot rule's k+1 models are tested below)
    model, vocab, threshold, metadata = train_model(
        name, sessions, epochs=EPOCHS, seed=0, overrides={**SMALL, **extra, "calibration": "quantile"},
        progress=False,
    )
    return request.param, model, vocab, threshold


def test_the_registry_builds_every_model_a_bundle_may_name():
    assert set(MODEL_CLASSES) == set(MODELS)


def scores(model, vocab, sessions):
    scorer = TorchScorer(model, model_name="toy", model_version="0")
    return scorer.score([vocab.encode(s) for s in sessions])


def test_normal_scores_below_anomalous(trained):
    name, model, vocab, _ = trained
    normal = np.array([s.score for s in scores(model, vocab, normal_sessions(60, seed=7))])
    anomalous = np.array([s.score for s in scores(model, vocab, anomalous_sessions(60, seed=8))])
    # rank-based separation: AUROC from pairwise comparisons
    auroc = float((anomalous[:, None] > normal[None, :]).mean())
    assert auroc > 0.9, f"{name}: AUROC {auroc:.3f} on the toy grammar"
    assert np.median(anomalous) > np.median(normal)


def test_unseen_key_is_unexpected(trained):
    name, model, vocab, _ = trained
    session = ["10", "11", "never-seen", "13", "14"]
    assert vocab.encode(session)[2] == UNK_ID
    result = scores(model, vocab, [session])[0]
    assert result.unexpected is not None and len(result.unexpected) == len(session)
    assert result.unexpected[2], f"{name}: UNK key not flagged"


def test_quantile_threshold_comes_from_normal_validation(trained):
    name, _, _, threshold = trained
    validation = np.array(threshold["validation_scores"])
    # validation scores are stored rounded to 6 decimals; the threshold sits a parity margin above
    value = np.quantile(validation, threshold["quantile"])
    assert threshold["quantile_value"] == pytest.approx(value, abs=1e-5)
    assert threshold["threshold"] == pytest.approx(value + 1e-4 * max(1.0, abs(value)), abs=1e-5)
    assert threshold["validation_sessions"] == len(validation) == 60  # 20% of 300
    assert "dtpm" in threshold


@pytest.mark.parametrize("name", ["logbert", "fastlogad"])
def test_pot_threshold_comes_from_out_of_fold_normal_scores(name):
    """The pot rule: every training session scored by a fold model that did not see it; the tail fit
    over those scores (in the served model's units) is the threshold, plus the parity margin."""
    sessions = varied_normal_sessions(600)
    _, _, threshold, metadata = train_model(name, sessions, epochs=EPOCHS, seed=0,
                                            overrides={**SMALL, "calibration": "pot"}, progress=False)
    assert threshold["calibration"] == "pot" and threshold["folds"] == 3
    assert threshold["validation_sessions"] == len(threshold["out_of_fold_fold"]) == 600
    assert not threshold["too_small"] and len(metadata["fold_train_seconds"]) == 3
    fit = pot_threshold(np.array(threshold["validation_scores"]), threshold["target_fpr"], threshold["tail_quantile"])
    assert fit.rule == threshold["tail"]["rule"]
    value = fit.threshold
    assert threshold["threshold"] == pytest.approx(value + THRESHOLD_MARGIN * max(1.0, abs(value)), rel=1e-3)
    assert "dtpm" in threshold
