"""Masking a message into Drain tokens: the stateless, costly half of parsing, runnable in a worker.

``Masker.masked(text)`` is what ``LogParser`` does to a message before Drain sees it: repair lone
surrogates, cut to ``max_line_chars``, apply the line-level rules to the whole text, split on
whitespace (and the preset's extra delimiters) and mask each token through a per-token cache. It
depends only on a ``MaskSpec`` (the rules and limits), never on Drain's state, so it gives the same
tokens in any process: ``MaskingWorker`` runs it in a child process, so that on a multi-core machine
the event loop keeps only the cheap, stateful half (the masked-shape lookup and Drain mining,
``LogParser.parse_masked``), and every lane still has exactly one Drain state.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from drain3.masking import MaskingInstruction

from otel_logbert.parsing.masking import split_for_tokens

MASK_PREFIX, MASK_SUFFIX = "<", ">"
# Cleared when full; only holds what can be recomputed. Repeated tokens (words, hosts) are few;
# the bound is for the unique ones (ids), whose masked forms are interned, so they cost little.
TOKEN_CACHE_SIZE = 50_000

_SURROGATES = re.compile("[\ud800-\udfff]")

Masked = tuple[str, bool]  # masked tokens joined by single spaces, whether the text was truncated


@dataclass(frozen=True)
class MaskSpec:
    """Everything masking depends on (``LogParser.mask_spec``); picklable. Specs are equal when
    their ``fingerprint`` is: same rule classes, patterns, masks and gates, same limits."""

    rules: tuple[MaskingInstruction, ...] = field(compare=False)
    max_line_chars: int
    extra_delimiters: tuple[str, ...] = ()
    fingerprint: tuple = field(default=(), repr=False)

    @classmethod
    def of(
        cls, rules: list[MaskingInstruction], max_line_chars: int, extra_delimiters: tuple[str, ...]
    ) -> MaskSpec:
        fingerprint = tuple(
            (type(r).__qualname__, r.regex.pattern, r.mask_with, getattr(r, "needs", None),
             getattr(getattr(r, "needs_pattern", None), "pattern", None))
            for r in rules
        )
        return cls(tuple(rules), max_line_chars, tuple(extra_delimiters), fingerprint)


class Masker:
    """Text -> masked Drain tokens (see the module docstring). Not thread-safe (its token cache)."""

    def __init__(self, spec: MaskSpec) -> None:
        self.spec = spec
        split = split_for_tokens(spec.rules)
        self._line_rules = split.line
        self._token_rules = split.token
        self._max = spec.max_line_chars
        self._delimiters = spec.extra_delimiters
        self._cache: dict[str, str] = {}

    def masked(self, text: str | bytes) -> Masked:
        """The masked Drain tokens of ``text`` joined by single spaces ("" for a blank text), and
        whether it was truncated. Never raises."""
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        elif not isinstance(text, str):
            text = str(text)
        truncated = len(text) > self._max
        if truncated:
            text = text[: self._max]
        if not text.isascii():
            text = _SURROGATES.sub("\ufffd", text)
        for rule in self._line_rules:
            text = rule.mask(text, MASK_PREFIX, MASK_SUFFIX)
        cache = self._cache
        masked = []
        for token in text.split():
            out = cache.get(token)
            if out is None:
                out = token
                for rule in self._token_rules:
                    out = rule.mask(out, MASK_PREFIX, MASK_SUFFIX)
                if out is not token:
                    out = sys.intern(out)  # "blk_<*>" once, however many block ids map to it
                if len(cache) >= TOKEN_CACHE_SIZE:
                    cache.clear()
                cache[token] = out
            masked.append(out)
        joined = " ".join(masked)
        if self._delimiters:  # as drain3's ``Drain.get_content_as_tokens``
            for delimiter in self._delimiters:
                joined = joined.replace(delimiter, " ")
            joined = " ".join(joined.split())
        return joined, truncated

    def masked_many(self, texts: list[str | bytes]) -> list[Masked]:
        return [self.masked(text) for text in texts]
