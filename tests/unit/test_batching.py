"""Chunking of long sessions, length buckets and merging chunk results."""

from __future__ import annotations

import numpy as np

from otel_logbert.scoring.batching import (
    LENGTH_BUCKET,
    bucket_length,
    chunk,
    length_class,
    pad_batch,
    score_sessions,
)


def fake_model(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """score = largest token id in the row; evidence = 1 where token id is odd."""
    return tokens.max(axis=1).astype(np.float32), (tokens % 2 == 1).astype(np.float32)


def test_chunk_splits_long_sessions_in_order():
    assert chunk(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert chunk([5, 6], 4) == [[5, 6]]


def test_session_score_is_max_over_chunks_and_evidence_concatenates():
    long = [4] * 9 + [40] + [4] * 5  # the spike sits in the 2nd chunk of max_len 8
    short = [6, 7]
    results = score_sessions([long, short], fake_model, max_len=8, batch_size=2)
    assert results[0].score == 40 and results[1].score == 7
    assert len(results[0].unexpected) == len(long)
    assert results[1].unexpected == (False, True)


def test_order_and_batching_do_not_change_results():
    rng = np.random.default_rng(0)
    sessions = [list(rng.integers(4, 50, size=rng.integers(1, 30))) for _ in range(50)]
    a = score_sessions(sessions, fake_model, max_len=8, batch_size=3)
    b = score_sessions(sessions, fake_model, max_len=8, batch_size=64)
    assert a == b


def test_padding_is_bucketed():
    tokens = pad_batch([[5, 6, 7], [5]], max_len=128)
    assert tokens.shape == (2, LENGTH_BUCKET) and tokens[1, 1:].sum() == 0
    assert bucket_length(9, 128) == 16 and bucket_length(200, 128) == 128


def test_batches_never_straddle_a_length_class():
    """A few long sessions never pad a batch of short ones (eval, bench, Triton and the sidecar
    all batch through ``score_sessions``)."""
    widths: list[int] = []

    def record(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        widths.append(tokens.shape[1])
        return tokens.sum(axis=1).astype(np.float64), np.zeros(tokens.shape)

    sessions = [[1] * 3, [1] * 100, [1] * 4, [1] * 20, [1] * 5]
    results = score_sessions(sessions, record, max_len=64, batch_size=256)
    # classes: 3, 4, 5 -> 8; 20 -> 32 (padded to 24); 100 -> chunks of 64 and 36, both class 64
    assert sorted(widths) == [8, 24, 64]
    assert [r.score for r in results] == [3, 64, 4, 20, 5]
    assert length_class(3, 64) == 8 and length_class(20, 64) == 32 and length_class(100, 64) == 64
