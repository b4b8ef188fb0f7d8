"""A deterministic stand-in for the sentence encoder: bag of words, one fixed random vector per word.

Texts sharing most words get a high cosine, unrelated texts a low one, so mapping logic can be tested
without loading all-MiniLM-L6-v2 (seconds). ``calls`` records every batch it embedded.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

DIM = 64


class BagOfWordsEncoder:
    name = "test/bag-of-words"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIM)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms == 0, 1, norms)


class BrokenEncoder:
    name = "test/broken"

    def __init__(self) -> None:
        raise RuntimeError("no model here")
