"""scoring.cache: the verdict cache gives what scoring gives, is bounded, and counts its hits.

Bookkeeping is driven with a small deterministic scorer; equivalence is checked with the real
ONNX Runtime scorer of a trained FastLogAD bundle on real HDFS dev sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from otel_logbert.scoring.base import Scorer, ScoringError, SessionScore
from otel_logbert.scoring.cache import CachedScorer

HDFS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hdfs"


class SumScorer(Scorer):
    """score = sum of the ids; evidence = ids > 1. Records every call."""

    model_name, model_version = "sum", "1"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[tuple[int, ...]]] = []
        self.fail = fail

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        self.calls.append([tuple(s) for s in sessions])
        if self.fail:
            raise ScoringError("down")
        return [SessionScore(float(sum(s)), tuple(t > 1 for t in s)) for s in sessions]


def test_hits_skip_the_model_and_repeats_in_one_call_are_scored_once() -> None:
    inner = SumScorer()
    cache = CachedScorer(inner, max_entries=10, max_keys=100)
    first = cache.score([[1, 2], [3], [1, 2]])
    assert inner.calls == [[(1, 2), (3,)]]
    assert [r.score for r in first] == [3.0, 3.0, 3.0] and first[0].unexpected == (False, True)
    second = cache.score([[3], [4, 4]])
    assert inner.calls[1] == [(4, 4)]
    assert [r.score for r in second] == [3.0, 8.0]
    stats = cache.stats
    assert (stats.lookups, stats.hits, stats.entries, stats.keys) == (5, 2, 3, 5)
    assert stats.hit_rate == pytest.approx(0.4)


def test_least_recently_used_go_first_by_entries_and_by_keys() -> None:
    inner = SumScorer()
    cache = CachedScorer(inner, max_entries=2, max_keys=1000)
    cache.score([[1], [2]])
    cache.score([[1]])  # 1 is now the most recent
    cache.score([[3]])  # evicts 2
    inner.calls.clear()
    cache.score([[1], [2], [3]])
    assert inner.calls == [[(2,)]]

    by_keys = CachedScorer(SumScorer(), max_entries=100, max_keys=32)
    by_keys.score([[1] * 2, [2] * 2])
    by_keys.score([[5] * 2])  # 6 keys in all: fits
    assert by_keys.stats.keys == 6
    long = [7] * 3  # longer than max_keys // 16 = 2: scored, never cached
    assert by_keys.score([long])[0].score == 21.0 and by_keys.stats.entries == 3
    crowded = CachedScorer(SumScorer(), max_entries=100, max_keys=32)
    crowded.score([[i, i] for i in range(20)])  # 40 keys: the oldest go until 32 fit
    assert crowded.stats.keys <= 32 and crowded.stats.entries == 16


def test_a_failing_scorer_caches_nothing() -> None:
    cache = CachedScorer(SumScorer(fail=True), max_entries=10, max_keys=100)
    with pytest.raises(ScoringError):
        cache.score([[1]])
    assert cache.stats.entries == 0


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CachedScorer(SumScorer(), max_entries=0, max_keys=10)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["fastlogad", "logbert"])
def test_cached_verdicts_equal_scored_ones_on_hdfs(tmp_path: Path, model_name: str) -> None:
    """Same per-key evidence flags and (to float noise) the same scores with and without the cache,
    over real HDFS dev sessions with their natural repetition, in batches of mixed composition, for
    both kinds of evidence: FastLogAD's token-level and LogBERT's top-g misses."""
    pytest.importorskip("torch")
    from otel_logbert.bundle import load_bundle
    from otel_logbert.export import export_onnx
    from otel_logbert.scoring.onnx import OnnxScorer
    from otel_logbert.training.data import read_sessions
    from otel_logbert.training.trainer import save_trained, train_model

    train = read_sessions(HDFS / "train_normal.txt").sessions[:400]
    model, vocab, threshold, metadata = train_model(model_name, train, epochs=1, progress=False)
    save_trained(tmp_path, model_name, model, vocab, threshold, metadata)
    export_onnx(tmp_path)
    bundle = load_bundle(tmp_path, require_onnx=True)
    normal, abnormal = (read_sessions(HDFS / name).sessions for name in ("dev_normal.csv", "dev_abnormal.csv"))
    dev = normal[:1500] + abnormal[:500]
    encoded = [bundle.vocab.encode(s) for s in dev]
    plain = OnnxScorer(bundle, batch_size=64)
    cache = CachedScorer(OnnxScorer(bundle, batch_size=64), max_entries=100_000, max_keys=2_000_000)
    expected = plain.score(encoded)
    got = []
    for start in range(0, len(encoded), 300):  # calls of other compositions than the plain one
        got += cache.score(encoded[start : start + 300])
    assert cache.stats.hit_rate > 0.3  # HDFS repeats itself
    assert any(r.unexpected and any(r.unexpected) for r in expected)  # evidence is there to compare
    assert [r.unexpected for r in got] == [r.unexpected for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=1e-5, atol=1e-6)
