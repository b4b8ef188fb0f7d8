"""Session keys: which session a record belongs to (``sessions.key`` in the YAML).

A ``KeyRule`` maps one record to zero or more ``(key, owner)`` placements:

- ``trace_id``: the record's trace id (16 bytes). No trace id -> no session.
- ``attributes``: the values of the configured resource and record attributes. All absent -> no
  session; some absent -> they count as empty.
- ``regex``: a regex search on the record's text (the parse field, usually the body); the first
  capture group if the pattern has one, else the whole match. No match -> no session.
- ``window``: time windows per attribute key (an empty attribute list = one stream per lane). The
  record's timestamp (``time_unix_nano``, else ``observed_time_unix_nano``, else arrival) picks the
  window(s). Tumbling (``slide_s == size_s``): one window. Sliding: the ``size_s / slide_s``
  overlapping windows that contain it; the record itself belongs to (is annotated with the verdict
  of) the latest-starting one, the others only see its log key.

Keys are hashable and cheap (bytes or tuples); ``label`` renders one as text for the session id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from typing import Any

from otel_logbert.otlp.codec import render_value

NO_TRACE_ID = b"\x00" * 16


class KeyRule:
    """Base class. Rules look at the lenient ``LogRecord``, its resource's attribute values
    (``dict[bytes, AnyValue]``), its parse text and its arrival time (unix seconds).

    ``key`` gives the one key of a record or None (no session); rules whose records join several
    sessions (sliding windows) set ``multi = True`` and implement ``placements`` instead.
    """

    reason_missing = "no session key"
    multi = False
    needs_text = False  # whether ``key``/``placements`` read ``text`` (else they get "")

    def key(self, record: Any, resource: dict[bytes, Any], text: str, now: float) -> Hashable | None:
        raise NotImplementedError

    def placements(
        self, record: Any, resource: dict[bytes, Any], text: str, now: float
    ) -> list[tuple[Hashable, bool]]:
        """``(key, owns_record)`` pairs; exactly one owns the record when the list is non-empty."""
        key = self.key(record, resource, text, now)
        return [] if key is None else [(key, True)]

    def label(self, key: Hashable) -> str:
        return str(key)


class TraceIdKey(KeyRule):
    reason_missing = "record has no trace id"

    def key(self, record: Any, resource: dict[bytes, Any], text: str, now: float) -> Hashable | None:
        trace_id = record.trace_id
        if len(trace_id) != 16 or trace_id == NO_TRACE_ID:
            return None
        return trace_id

    def label(self, key: Hashable) -> str:
        assert isinstance(key, bytes)
        return key.hex()


class AttributesKey(KeyRule):
    """Key = the tuple of configured attribute values (resource ones first)."""

    def __init__(self, resource_attributes: Sequence[str], record_attributes: Sequence[str]) -> None:
        self.resource_names = [n.encode() for n in resource_attributes]
        self.record_names = [n.encode() for n in record_attributes]
        names = [*resource_attributes, *record_attributes]
        self.reason_missing = f"record has none of the attributes {', '.join(names)}"

    def key(self, record: Any, resource: dict[bytes, Any], text: str, now: float) -> Hashable | None:
        values: list[str] = []
        found = False
        for name in self.resource_names:
            value = resource.get(name)
            found |= value is not None
            values.append("" if value is None else render_value(value))
        if self.record_names:
            record_values = {kv.key: kv.value for kv in record.attributes}
            for name in self.record_names:
                value = record_values.get(name)
                found |= value is not None
                values.append("" if value is None else render_value(value))
        return tuple(values) if found else None

    def label(self, key: Hashable) -> str:
        assert isinstance(key, tuple)
        return "|".join(key)


class RegexKey(KeyRule):
    needs_text = True

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.group = 1 if self.pattern.groups else 0
        self.reason_missing = f"text does not match sessions.regex {pattern!r}"

    def key(self, record: Any, resource: dict[bytes, Any], text: str, now: float) -> Hashable | None:
        match = self.pattern.search(text)
        if match is None:
            return None
        value = match.group(self.group)
        return None if value is None else value


class WindowKey(KeyRule):
    """Time windows of ``size_s`` every ``slide_s`` per attribute key."""

    def __init__(self, size_s: float, slide_s: float, base: AttributesKey | None) -> None:
        self.size_s = size_s
        self.slide_s = slide_s
        self.per_record = max(1, math.ceil(size_s / slide_s - 1e-9))
        self.base = base

    multi = True

    def placements(
        self, record: Any, resource: dict[bytes, Any], text: str, now: float
    ) -> list[tuple[Hashable, bool]]:
        base: Hashable = ()
        if self.base is not None:
            found = self.base.key(record, resource, text, now)
            base = () if found is None else found
        ts = record_time(record) or now
        last = math.floor(ts / self.slide_s)  # index of the latest-starting window containing ts
        out: list[tuple[Hashable, bool]] = [((base, last), True)]
        for index in range(last - 1, last - self.per_record, -1):
            if (index * self.slide_s) + self.size_s > ts:
                out.append(((base, index), False))
        return out

    def key(self, record: Any, resource: dict[bytes, Any], text: str, now: float) -> Hashable | None:
        return self.placements(record, resource, text, now)[0][0]  # the owning window

    def label(self, key: Hashable) -> str:
        assert isinstance(key, tuple)
        base, index = key
        start = index * self.slide_s
        prefix = "|".join(base)
        return f"{prefix}@{start:g}" if prefix else f"@{start:g}"


def record_time(record: Any) -> float:
    """The record's timestamp in unix seconds (event time, else observed time), 0 if neither."""
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    return nanos / 1e9 if nanos else 0.0


def key_rule(
    key: str,
    *,
    resource_attributes: Sequence[str] = (),
    record_attributes: Sequence[str] = (),
    regex: str | None = None,
    window_size_s: float = 60.0,
    window_slide_s: float = 60.0,
) -> KeyRule:
    """The rule for ``sessions.key`` (validated by ``config``; raises ``ValueError`` otherwise)."""
    if key == "trace_id":
        return TraceIdKey()
    if key == "attributes":
        return AttributesKey(resource_attributes, record_attributes)
    if key == "regex":
        if not regex:
            raise ValueError("regex session key needs a pattern")
        return RegexKey(regex)
    if key == "window":
        base = (
            AttributesKey(resource_attributes, record_attributes)
            if (resource_attributes or record_attributes)
            else None
        )
        return WindowKey(window_size_s, window_slide_s, base)
    raise ValueError(f"unknown session key {key!r}")


__all__ = ["KeyRule", "key_rule", "record_time"]
