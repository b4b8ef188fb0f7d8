"""``eval --baseline semantic`` (the centroid baseline stored in a bundle's semantic.json) and the
``train --semantic`` input check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from semantic_fakes import BagOfWordsEncoder

from otel_logbert.bundle import load_bundle
from otel_logbert.cli import main
from otel_logbert.parsing.semantic import fit_bundle_index, save_index
from tests.conftest import make_rule_bundle


@pytest.fixture
def semantic_bundle(tmp_path: Path) -> tuple[Path, list[str]]:
    """A rule bundle (keys of ``NORMAL_MESSAGES``) with a semantic.json fitted on HDFS-like sessions."""
    path = make_rule_bundle(tmp_path / "bundle")
    bundle = load_bundle(path)
    keys = [str(c["id"]) for c in bundle.drain_state["clusters"]]
    hdfs = keys[:3]  # the HDFS messages; keys[3:] (user, order, payment) never occur in normal sessions
    sessions = [hdfs, hdfs[:2], hdfs + hdfs[2:]] * 10
    save_index(path, fit_bundle_index(bundle.drain_state, bundle.vocab, sessions, BagOfWordsEncoder(),
                                      val_fraction=0.2, seed=0, quantile=1.0))
    return path, keys


def test_eval_baseline_semantic_flags_sessions_far_from_the_normal_centroid(semantic_bundle, tmp_path, capsys):
    path, keys = semantic_bundle
    normal, abnormal, out = tmp_path / "normal.txt", tmp_path / "abnormal.txt", tmp_path / "m.json"
    normal.write_text("\n".join([" ".join(keys[:3]), " ".join(keys[:2])]) + "\n")
    abnormal.write_text("\n".join([" ".join(keys[3:]), "999 998"]) + "\n")  # other events; nothing known
    assert main(["eval", "--bundle", str(path), "--normal", str(normal), "--abnormal", str(abnormal),
                 "--baseline", "semantic", "--json", str(out), "--no-save"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["model"] == "fastlogad" and set(metrics["baselines"]) == {"semantic-centroid"}
    semantic = metrics["baselines"]["semantic-centroid"]
    assert (semantic["fp"], semantic["tp"]) == (0, 2)
    assert "semantic-centroid" in capsys.readouterr().out


def test_eval_baseline_needs_a_semantic_json(tmp_path, capsys):
    path = make_rule_bundle(tmp_path / "plain")
    sessions = tmp_path / "s.txt"
    sessions.write_text("1 2\n")
    assert main(["eval", "--bundle", str(path), "--normal", str(sessions), "--abnormal", str(sessions),
                 "--baseline", "semantic"]) == 2
    assert "train on raw logs with --semantic" in capsys.readouterr().err


def test_train_semantic_needs_raw_log_input(tmp_path, capsys):
    sessions = tmp_path / "keys.txt"
    sessions.write_text("1 2 3\n1 2\n")
    assert main(["train", "--model", "fastlogad", "--train", str(sessions), "--out", str(tmp_path / "b"),
                 "--semantic", "--quiet"]) == 2
    assert "--semantic needs raw log lines" in capsys.readouterr().err
