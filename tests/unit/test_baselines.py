"""The cheap baselines (``training.baselines``) on the toy grammar, and ``eval`` printing them beside the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toy import anomalous_sessions, normal_sessions

from otel_logbert.bundle import load_bundle
from otel_logbert.cli import main
from otel_logbert.errors import BundleError
from otel_logbert.parsing.vocabulary import Vocabulary
from otel_logbert.training.baselines import (
    COUNTS_PCA,
    NEW_EVENT,
    CountPCA,
    baseline_scores,
    count_vectors,
    fit_baselines,
    load_baselines,
    save_baselines,
)
from otel_logbert.training.data import split_normal
from tests.conftest import make_rule_bundle


@pytest.fixture(scope="module")
def toy():
    sessions = normal_sessions(300)
    train, val = split_normal(sessions, 0.2, seed=0)
    vocab = Vocabulary.from_sessions(sessions)
    stored = json.loads(json.dumps(fit_baselines(train, val, vocab, quantile=1.0)))  # through JSON, as stored
    normal = [vocab.encode(s) for s in normal_sessions(60, seed=7)]
    anomalous = [vocab.encode(s) for s in anomalous_sessions(60, seed=8)]
    return vocab, stored, normal, anomalous


def flagged(name, toy, sessions):
    vocab, stored, _, _ = toy
    scores, threshold = baseline_scores(name, sessions, len(vocab), stored)
    return scores > threshold


def test_new_event_flags_exactly_the_sessions_with_a_never_seen_key(toy):
    _, _, normal, anomalous = toy
    assert not flagged(NEW_EVENT, toy, normal).any()
    # toy anomalies: every third (kind 2) replaces a key by the never-seen "99"
    assert flagged(NEW_EVENT, toy, anomalous).tolist() == [i % 3 == 2 for i in range(len(anomalous))]


def test_counts_pca_sees_changed_counts_but_not_changed_order(toy):
    vocab, _, normal, anomalous = toy
    hits = flagged(COUNTS_PCA, toy, anomalous)
    assert not flagged(COUNTS_PCA, toy, normal).any()  # quantile 1.0 of normal validation, same grammar
    kinds = np.arange(len(anomalous)) % 3
    flow_a = np.array([vocab.id_of("13") in s for s in anomalous])
    assert hits[kinds == 2].all()  # a never-seen key fills the UNK column normal training never filled
    # flow A with flow B's "16" inserted: counts outside the normal space
    assert hits[(kinds == 1) & flow_a].all()
    # flow B with one "12" inserted lies in the normal space (flow A's count of 12 varies freely): linear
    # count models miss it; and reversed flows have the same counts: a count vector is order-blind
    assert not hits[(kinds == 1) & ~flow_a].any()
    assert not hits[kinds == 0].any()


def test_count_vectors_put_unknown_ids_in_the_last_column():
    counts = count_vectors([[4, 4, 5, 1], [9]], vocab_size=6)  # ids 4, 5 known; 1 = UNK; 9 out of range
    assert counts.tolist() == [[2, 1, 1], [0, 0, 1]]


def test_pca_of_a_single_kind_of_session_keeps_the_mean_only():
    train = count_vectors([[4, 5]] * 10, vocab_size=6)
    pca = CountPCA.fit(train, train, quantile=1.0)
    assert pca.components.shape == (0, 3)
    assert pca.score(count_vectors([[4, 5], [4, 5, 5]], 6)).tolist() == [0.0, 1.0]


def test_eval_prints_baselines_beside_the_model(tmp_path: Path, capsys):
    path = make_rule_bundle(tmp_path / "bundle")
    bundle = load_bundle(path)
    keys = list(bundle.vocab.keys)
    normal = [keys[:3], keys[:2], keys[3:]] * 10
    save_baselines(path, fit_baselines(normal, normal, bundle.vocab, quantile=1.0))
    normal_file, abnormal_file, out = tmp_path / "n.txt", tmp_path / "a.txt", tmp_path / "m.json"
    normal_file.write_text(f"{' '.join(keys[:3])}\n{' '.join(keys[3:])}\n")
    abnormal_file.write_text(f"{' '.join(keys[:3])} 999\n{' '.join(keys[:3] + keys[3:])}\n")
    assert main(["eval", "--bundle", str(path), "--normal", str(normal_file), "--abnormal", str(abnormal_file),
                 "--json", str(out), "--no-save"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["model"] == "fastlogad"  # the rule bundle's model row first
    rows = metrics["baselines"]
    assert (rows[NEW_EVENT]["tp"], rows[NEW_EVENT]["fp"]) == (1, 0)  # only the session with key 999
    assert (rows[COUNTS_PCA]["tp"], rows[COUNTS_PCA]["fp"]) == (2, 0)  # 999, and both flows in one session
    printed = capsys.readouterr().out
    assert printed.index("detector") < printed.index(COUNTS_PCA) < printed.index("F1 at paper mix")


def test_eval_names_a_missing_baselines_file(tmp_path: Path, capsys):
    path = make_rule_bundle(tmp_path / "plain")
    sessions = tmp_path / "s.txt"
    sessions.write_text("1 2\n")
    assert main(["eval", "--bundle", str(path), "--normal", str(sessions), "--abnormal", str(sessions),
                 "--baseline", COUNTS_PCA, "--no-save"]) == 2
    assert "--baseline counts-pca: no baselines.json" in capsys.readouterr().err
    # asked for nothing in particular, a bundle without the file still gets its new-event row
    assert main(["eval", "--bundle", str(path), "--normal", str(sessions), "--abnormal", str(sessions),
                 "--no-save"]) == 0
    captured = capsys.readouterr()
    assert NEW_EVENT in captured.out and "no baselines.json" in captured.err


def test_unreadable_baselines_file_is_a_bundle_error(tmp_path: Path):
    (tmp_path / "baselines.json").write_text("{not json")
    with pytest.raises(BundleError, match="baselines.json: not valid JSON"):
        load_baselines(tmp_path)
