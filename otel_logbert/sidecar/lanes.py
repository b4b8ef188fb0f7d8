"""Lanes: the parser + model pairs a sidecar routes records to, by ``service.name``.

A lane owns everything whose ids must agree: a Drain3 ``LogParser`` (log keys are its cluster ids),
the bundle's vocabulary and scorer (trained on those ids), and a threshold policy. Sessions never mix
lanes. The default lane uses ``scoring.bundle`` and ``parsing.masking``; ``scoring.routes`` and
``parsing.masking_by_service`` send named services to other lanes (one lane per distinct
bundle + masking pair, shared by the services that name the same pair).

In learn-only mode a configured bundle still provides its parser (so learned keys continue its ids)
but no scorer. A lane's parser comes from, in order: its state file (``parsing.state_file``, suffixed with the lane
name for non-default lanes) when it exists, so a restarted sidecar keeps its keys; else the bundle's
``drain3.json`` (whose masking then wins over the configured one); else a fresh parser.

Key ids are stable: a key is a Drain3 cluster id, which survives its template's generalisation, and the
bundle's vocabulary (cluster id -> token id) is frozen. A cluster created while serving is UNK unless
``parsing.semantic_mapping`` is enabled, in which case the lane's ``SemanticKeyMapper`` may map it to the
nearest training template (its own table; the vocabulary is never changed). Clusters that a restarted
sidecar finds in its parser state are handed to the mapper again at start.

A body longer than the parser's ``max_line_chars`` is parsed truncated; its record gets the attribute
``<attributes.prefix>.body_truncated = true`` next to the template, and its body is forwarded untouched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otel_logbert.otlp.codec import attributes_bytes
from otel_logbert.parsing.drain import LogParser, ParseResult
from otel_logbert.parsing.persistence import FilePersistence, ParserPersister
from otel_logbert.parsing.semantic import SemanticKeyMapper
from otel_logbert.parsing.vocabulary import UNK_ID, Vocabulary
from otel_logbert.parsing.worker import MaskingWorker, WorkerUnavailable
from otel_logbert.scoring.base import Scorer, SessionScore
from otel_logbert.scoring.thresholds import ThresholdPolicy
from otel_logbert.sessions.session import LogKey, Session, Verdict

# Parsed texts remembered per lane (text -> key); cleared when full. Identical bodies are common
# (health checks, fixed messages), and a hit skips tokenising and masking entirely. The repeated
# bodies are few, so a small bound keeps them while unique bodies (ids in them) cost little memory.
TEXT_CACHE_SIZE = 20_000
# Records (texts) handled on the event loop between yields to it, by ``parse_many`` and the pipeline: a
# closed session's scoring and forwarding steps wait at most one such slice behind a large request.
# 128 against 1024: the same throughput in the sidecar benchmark; p50 close -> forwarded 0.8 ms lower
# (medians of 3, downstream in its own process), 3-4 ms lower with it in the senders' process.
YIELD_EVERY = 128
DEFAULT_LANE = "default"
TRUNCATED_SUFFIX = "body_truncated"  # <attributes.prefix>.body_truncated, on records parsed truncated


@dataclass
class Lane:
    """One parser (+ model). ``scorer`` is None in learn-only mode."""

    index: int
    name: str
    parser: LogParser
    template_attribute: str
    scorer: Scorer | None = None
    vocab: Vocabulary | None = None
    threshold: ThresholdPolicy | None = None
    model: str = ""
    model_version: str = ""
    max_len: int = 512
    state_file: Path | None = None
    services: list[str] = field(default_factory=list)
    key_mapper: SemanticKeyMapper | None = None  # unseen keys mapped by meaning (parsing.semantic_mapping)
    truncated_attribute: str = f"log.anomaly.{TRUNCATED_SUFFIX}"
    _cache: dict[bytes | str, str] = field(default_factory=dict, repr=False)
    # key -> (its current template, the LogKey carrying that template's attribute)
    _templates: dict[str, tuple[str, LogKey]] = field(default_factory=dict, repr=False)
    # masks large batches in another process (``parse_many``); None: everything is parsed here
    masking_worker: MaskingWorker | None = field(default=None, repr=False)
    # the parser's one persister: ``state_file`` here, learn mode adds its own file (sessions.learn)
    persister: ParserPersister = field(init=False, repr=False)

    def __post_init__(self) -> None:
        handlers = (FilePersistence(self.state_file),) if self.state_file is not None else ()
        self.persister = ParserPersister(self.parser, handlers)

    def parse(self, text: bytes | str) -> tuple[LogKey, bytes]:
        """Log key of ``text`` and the serialized attributes to append: ``log.record.template``, plus
        the truncation flag when ``text`` was cut for parsing (such texts are not cached). The key is
        a ``LogKey`` whose ``attr`` is those attributes, shared by every record with that key and
        template (a session holds it once, not per record)."""
        key = self._cache.get(text)
        if key is None:
            return self._parsed(text, self.parser.parse(text))
        log_key = self._templates[key][1]
        return log_key, log_key.attr

    async def parse_many(self, texts: list[bytes | str]) -> list[tuple[LogKey, bytes]]:
        """``parse`` of every text, in order. Where the lane has a ``masking_worker`` and enough
        texts miss the cache, they are masked in a worker process meanwhile (the event loop runs
        other tasks), then looked up and mined here, in order: the lane's one Drain state. Otherwise
        they are parsed here, yielding to the event loop every ``YIELD_EVERY`` texts."""
        worker = self.masking_worker
        if worker is None or worker.failed or len(texts) < worker.min_batch:
            return await self._parse_here(texts)
        cache = self._cache
        misses = list(dict.fromkeys(text for text in texts if text not in cache))
        if not worker.offloads(len(misses)):
            return await self._parse_here(texts)
        try:
            masked = await worker.masked_many(self.parser.masker.spec, misses)
        except WorkerUnavailable:
            return await self._parse_here(texts)
        parse_masked, templates = self.parser.parse_masked, self._templates
        masked_of = dict(zip(misses, masked, strict=True))
        out = []
        for text in texts:
            key = cache.get(text)
            if key is not None:
                log_key = templates[key][1]
                out.append((log_key, log_key.attr))
                continue
            found = masked_of.get(text)  # None: a hit when the batch was sent, the cache cleared since
            out.append(self._parsed(text, parse_masked(*found) if found is not None else self.parser.parse(text)))
        return out

    async def _parse_here(self, texts: list[bytes | str]) -> list[tuple[LogKey, bytes]]:
        """``parse`` of every text on the event loop, which runs other tasks every ``YIELD_EVERY``."""
        out = []
        for i, text in enumerate(texts, 1):
            out.append(self.parse(text))
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return out

    def _parsed(self, text: bytes | str, result: ParseResult) -> tuple[LogKey, bytes]:
        """``parse``'s answer for ``text`` just parsed: templates, the semantic mapper and the
        text cache learn from it."""
        key = result.key
        known = self._templates.get(key)
        if known is None or known[0] != result.template:
            encoded = attributes_bytes([(self.template_attribute, result.template)])
            self._templates[key] = known = (result.template, LogKey(key, encoded))
        if self.key_mapper is not None:
            self.key_mapper.observe(key, result.template)
        log_key = known[1]
        if result.truncated:
            truncated = LogKey(key, log_key.attr + attributes_bytes([(self.truncated_attribute, True)]))
            return truncated, truncated.attr
        if len(self._cache) >= TEXT_CACHE_SIZE:
            self._cache.clear()
        self._cache[text] = key
        return log_key, log_key.attr

    def template(self, key: str) -> str:
        """The current template of ``key`` (the key itself if this lane never saw it)."""
        known = self._templates.get(key)
        return known[0] if known is not None else key

    def score(self, sessions: Sequence[Sequence[str]]) -> list[SessionScore]:
        """Encode and score sessions of log keys (blocking; run it in a worker thread).
        Raises ``ScoringError`` (or anything the backend raises) on failure."""
        assert self.scorer is not None and self.vocab is not None
        encode = self.key_mapper.encode if self.key_mapper is not None else self.vocab.encode
        return self.scorer.score([encode(keys) for keys in sessions])

    def verdict(self, session: Session, result: SessionScore) -> Verdict:
        """The verdict on ``session`` from its raw score: the threshold policy alone decides
        ``is_anomaly``. A non-finite score is unscored; evidence that does not line up with the
        session's keys is not shown. Call in closing order (dynamic thresholds learn from it)."""
        assert self.threshold is not None
        score = float(result.score)
        if not math.isfinite(score):
            return Verdict.unscored("model returned a non-finite score", self.model, self.model_version)
        threshold, is_anomaly = self.threshold.judge(session.service, score)
        unexpected = result.unexpected
        if unexpected is not None and len(unexpected) != len(session.keys):
            unexpected = None
        return Verdict(
            status="scored",
            model=self.model,
            model_version=self.model_version,
            score=score,
            threshold=threshold,
            is_anomaly=is_anomaly,
            unexpected=unexpected,
        )

    def warm_up(self) -> None:
        """Score one short session so the first real batch does not pay the backend's start-up."""
        if self.scorer is not None:
            self.scorer.score([[UNK_ID] * 8])

    def save_state(self) -> None:
        """Save the parser state where it changed, now (blocking; on a loop use ``persister.save_async``)."""
        self.persister.save()

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
        if self.key_mapper is not None:
            self.key_mapper.close()


class Router:
    """``service.name`` -> lane; unknown services go to lane 0 (the default)."""

    def __init__(
        self, lanes: list[Lane], by_service: dict[str, Lane], masking_worker: MaskingWorker | None = None
    ) -> None:
        """``masking_worker``: the worker the lanes share (``Lane.masking_worker``); closed with them."""
        self.lanes = lanes
        self.default = lanes[0]
        self._by_service = by_service
        self.masking_worker = masking_worker

    def lane_for(self, service: str) -> Lane:
        return self._by_service.get(service, self.default)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()
        if self.masking_worker is not None:
            self.masking_worker.close()
