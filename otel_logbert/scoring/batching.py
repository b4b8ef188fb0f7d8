"""Chunking of long sessions, length-bucketed padding and merging chunk results back per session.

Shared by every scorer (PyTorch in ``eval``, ONNX Runtime, Triton) so they agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from otel_logbert.parsing.vocabulary import PAD_ID
from otel_logbert.scoring.base import SessionScore

# Padded lengths are rounded up to a multiple of this, so that requests of similar length share a
# shape (cheaper for ONNX Runtime, and what lets Triton's dynamic batcher merge requests).
LENGTH_BUCKET = 8

# A function that scores one padded batch: tokens int64 [B, L] -> (score [B], evidence [B, L]).
BatchFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def chunk(session: Sequence[int], max_len: int) -> list[Sequence[int]]:
    """Split a session into consecutive chunks of at most ``max_len`` keys (one empty chunk for an
    empty session, so it still gets a score)."""
    if len(session) <= max_len:
        return [session]
    return [session[i : i + max_len] for i in range(0, len(session), max_len)]


def bucket_length(length: int, max_len: int) -> int:
    return min(max_len, max(LENGTH_BUCKET, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET))


def pad_batch(chunks: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Chunks -> int64 [B, L] padded with PAD_ID, L = the bucketed length of the longest chunk."""
    width = bucket_length(max((len(c) for c in chunks), default=1), max_len)
    tokens = np.full((len(chunks), width), PAD_ID, dtype=np.int64)
    for row, c in enumerate(chunks):
        tokens[row, : len(c)] = c
    return tokens


def length_class(length: int, max_len: int) -> int:
    """Power-of-two length class (at least 8, at most ``max_len``) that batches never straddle."""
    return min(max_len, 1 << max(3, (max(length, 1) - 1).bit_length()))


def _batches(order: list[int], classes: list[int], batch_size: int) -> list[list[int]]:
    """Cut ``order`` (chunk ids sorted by length) into batches of one length class each."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= batch_size or classes[i] != classes[current[0]]):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def score_sessions(
    sessions: Sequence[Sequence[int]], score_batch: BatchFn, max_len: int, batch_size: int
) -> list[SessionScore]:
    """Score sessions through ``score_batch``: chunk, sort by length, batch, pad per batch, merge.

    A batch holds at most ``batch_size`` chunks of one power-of-two length class (``length_class``),
    so a few long sessions never pad a batch of short ones. The session score is the maximum over
    its chunks; the evidence is concatenated in order.
    """
    chunks: list[Sequence[int]] = []
    counts: list[int] = []  # chunks per session, in session order
    for session in sessions:
        parts = chunk(session, max_len)
        chunks.extend(parts)
        counts.append(len(parts))
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
    chunk_scores = np.zeros(len(chunks), dtype=np.float64)
    chunk_flags: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(chunks)
    for ids in _batches(order, [length_class(len(c), max_len) for c in chunks], batch_size):
        tokens = pad_batch([chunks[i] for i in ids], max_len)
        scores, evidence = score_batch(tokens)
        for row, i in enumerate(ids):
            chunk_scores[i] = float(scores[row])
            chunk_flags[i] = evidence[row, : len(chunks[i])] > 0.5
    results: list[SessionScore] = []
    position = 0
    for n in counts:  # every session has at least one chunk
        flags = np.concatenate(chunk_flags[position : position + n])
        results.append(SessionScore(
            score=float(chunk_scores[position : position + n].max()),
            unexpected=tuple(bool(f) for f in flags),
        ))
        position += n
    return results
