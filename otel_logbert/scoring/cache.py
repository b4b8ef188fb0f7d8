"""A verdict cache in front of any scorer: sessions with the same encoded key sequence get the same
raw score and per-key evidence, so each distinct sequence is scored once.

    scorer = CachedScorer(OnnxScorer(bundle), max_entries=100_000, max_keys=2_000_000)
    scorer.score(sessions)          # misses go to the wrapped scorer in one call, hits are copied
    scorer.stats                    # CacheStats(lookups, hits, entries, keys)

Log sessions repeat heavily (HDFS: 14,579 held-out sessions hold 3,626 distinct key sequences), and a
model is a deterministic function of the token ids, so a hit returns exactly what scoring would
(to float noise: a batch's padding width can move a score in the 7th digit; evidence flags are the
same). Sessions repeated within one call are scored once too.

Bounded memory: at most ``max_entries`` sequences and ``max_keys`` token ids in all; the least
recently used go first. Sequences longer than ``max_keys // 16`` are never cached (they would push out
many short ones). A cache belongs to one scorer, i.e. to one loaded bundle: a new bundle (a restart,
another lane) starts with an empty cache, so a cached verdict never outlives its model.
Thread-safe (a lock around the table; scoring itself runs outside it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from otel_logbert.scoring.base import Scorer, SessionScore

DEFAULT_CACHE_ENTRIES = 100_000
DEFAULT_CACHE_KEYS = 2_000_000  # token ids held in all (about 16 MB of tuples at most)


@dataclass(frozen=True)
class CacheStats:
    lookups: int
    hits: int
    entries: int
    keys: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class CachedScorer(Scorer):
    """``inner`` behind an LRU table keyed by the encoded session. Raises ``ValueError`` for a
    ``max_entries`` or ``max_keys`` below 1."""

    def __init__(self, inner: Scorer, *, max_entries: int, max_keys: int) -> None:
        if max_entries < 1 or max_keys < 1:
            raise ValueError(f"cache bounds must be at least 1, got max_entries={max_entries}, max_keys={max_keys}")
        self.inner = inner
        self.model_name = inner.model_name
        self.model_version = inner.model_version
        self.max_entries = max_entries
        self.max_keys = max_keys
        self.max_cached_length = max(1, max_keys // 16)
        self._table: OrderedDict[tuple[int, ...], SessionScore] = OrderedDict()
        self._keys = 0  # token ids held by the table
        self._lookups = 0
        self._hits = 0
        self._lock = threading.Lock()

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._lookups, self._hits, len(self._table), self._keys)

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        """One ``SessionScore`` per session, in order; the misses are scored by ``inner`` in one
        call (raises what it raises; nothing is cached then)."""
        keys = [tuple(session) for session in sessions]
        results: list[SessionScore | None] = [None] * len(keys)
        missing: dict[tuple[int, ...], list[int]] = {}
        with self._lock:
            self._lookups += len(keys)
            for index, key in enumerate(keys):
                hit = self._table.get(key)
                if hit is not None:
                    self._table.move_to_end(key)
                    results[index] = hit
                else:
                    missing.setdefault(key, []).append(index)
            self._hits += len(keys) - len(missing)  # a repeat within the call is scored once: a hit
        if missing:
            scored = self.inner.score(list(missing))
            with self._lock:
                for (key, indices), result in zip(missing.items(), scored, strict=True):
                    for index in indices:
                        results[index] = result
                    self._remember(key, result)
        return results  # type: ignore[return-value]  # every slot is filled

    def ready(self) -> bool:
        return self.inner.ready()

    def close(self) -> None:
        self.inner.close()

    def _remember(self, key: tuple[int, ...], result: SessionScore) -> None:
        if len(key) > self.max_cached_length or key in self._table:
            return
        self._table[key] = result
        self._keys += len(key)
        while len(self._table) > self.max_entries or self._keys > self.max_keys:
            old, _ = self._table.popitem(last=False)
            self._keys -= len(old)
