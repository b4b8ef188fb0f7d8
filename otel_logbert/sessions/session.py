"""The data the sidecar moves around: where a record came from, the record, the session, the verdict.

Records are kept as *serialized* ``LogRecord`` bytes (see ``otlp.codec``): that is what is forwarded,
it is compact, and it lets a request's decoded messages be freed as soon as the request is ingested.
Classes use ``__slots__`` because hundreds of thousands of them can be alive at once.
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Hashable
from dataclasses import dataclass

NO_SPAN_ID = b"\x00" * 8


class Origin:
    """The resource and instrumentation scope a record was sent under (serialized), so forwarded
    records are regrouped under exactly the ``Resource``/``InstrumentationScope`` they came with.

    ``resource``/``scope`` are None when the sender left the message unset. Interned: records of
    the same origin share one object (see ``OriginTable``).
    """

    __slots__ = ("resource", "resource_schema", "scope", "scope_schema", "service", "__weakref__")

    def __init__(
        self,
        resource: bytes | None,
        resource_schema: bytes,
        scope: bytes | None,
        scope_schema: bytes,
        service: str,
    ) -> None:
        self.resource = resource
        self.resource_schema = resource_schema
        self.scope = scope
        self.scope_schema = scope_schema
        self.service = service  # resource attribute service.name ("" when absent)

    @property
    def resource_key(self) -> tuple[bytes | None, bytes]:
        return (self.resource, self.resource_schema)

    @property
    def scope_key(self) -> tuple[bytes | None, bytes]:
        return (self.scope, self.scope_schema)


class OriginTable:
    """Interns ``Origin``s: records sent under the same resource and scope share one object, which
    keeps memory flat with many open sessions. Holds origins weakly: unused ones disappear."""

    def __init__(self) -> None:
        self._table: weakref.WeakValueDictionary[tuple[bytes | None, bytes, bytes | None, bytes], Origin] = (
            weakref.WeakValueDictionary()
        )

    def get(
        self,
        resource: bytes | None,
        resource_schema: bytes,
        scope: bytes | None,
        scope_schema: bytes,
        service: str,
    ) -> Origin:
        key = (resource, resource_schema, scope, scope_schema)
        origin = self._table.get(key)
        if origin is None:
            origin = Origin(resource, resource_schema, scope, scope_schema, service)
            self._table[key] = origin
        return origin

    def __len__(self) -> int:
        return len(self._table)


class Record:
    """One log record held by the sidecar.

    ``data``: the serialized ``LogRecord`` as received, minus any attributes the sidecar owns, plus
    the ``log.record.template`` attribute. ``pos``: the index of its key in its session's ``keys``.
    ``ticket``: where the persistent queue holds it (``sidecar.wal``; 0 without persistence).
    """

    __slots__ = ("data", "origin", "pos", "ticket")

    def __init__(self, data: bytes, origin: Origin, pos: int = 0, ticket: int = 0) -> None:
        self.data = data
        self.origin = origin
        self.pos = pos
        self.ticket = ticket


class Session:
    """An open (then closed) session: the log keys of its records and the records.

    While open, ``keys`` are in arrival order. ``times`` (filled only when the store orders by time,
    else empty) holds one unix-nano timestamp per key; ``in_order`` is False once a key arrived with
    an earlier timestamp than the one before it. ``order_by_time`` puts a closed session in
    timestamp order. ``keys`` may be longer than ``records``: in sliding windows a record's key also
    joins the overlapping windows that do not own the record. ``closed_by`` says why it closed:
    inactivity, max_length, max_age, memory_cap or shutdown.
    """

    __slots__ = (
        "key",
        "label",
        "serial",
        "lane",
        "keys",
        "times",
        "in_order",
        "records",
        "opened",
        "last",
        "trace_id",
        "span_id",
        "first_ts",
        "last_ts",
        "service",
        "closed_by",
        "closed_at",
    )

    def __init__(self, key: Hashable, serial: int, lane: int, now: float) -> None:
        self.key = key
        self.label = ""  # the key as text (hex trace id, attribute values...), set when it closes
        self.serial = serial
        self.lane = lane
        self.keys: list[str] = []
        self.times = array("Q")  # per key, unix nanos (see the class docstring)
        self.in_order = True
        self.records: list[Record] = []
        self.opened = now
        self.last = now
        self.trace_id: bytes = b""
        self.span_id: bytes = b""
        # the lead record's (first to arrive, or the earliest when ordering by time) time, service,
        # trace and span id: kept by ``append``
        self.first_ts = 0  # unix nanos (0 = unknown)
        self.last_ts = 0
        self.service = ""
        self.closed_by = ""
        self.closed_at = 0.0

    def append(
        self,
        log_key: str,
        record: Record | None,
        now: float,
        ts: int,
        by_time: bool,
        trace_id: bytes = b"",
        span_id: bytes = b"",
    ) -> None:
        """Add one log key (and ``record`` when this session owns it) at monotonic time ``now``.

        ``ts``: the record's timestamp in unix nanos (0 = unknown); with ``by_time`` it is kept per
        key (an untimed key takes the timestamp of the key before it, so it stays where it arrived).
        An owned record may become the lead record: the first to arrive or, with ``by_time``, the
        earliest timed one; its service (from its origin), trace id and span id are the session's.
        A session whose lead has no span id takes the first span id that arrives.
        """
        self.last = now
        if by_time:
            times = self.times
            key_ts = ts
            if times:
                if not ts:
                    key_ts = times[-1]
                elif ts < times[-1]:
                    self.in_order = False
            times.append(key_ts)
        if record is not None:
            record.pos = len(self.keys)
            self.records.append(record)
            has_span = bool(span_id) and span_id != NO_SPAN_ID
            if len(self.records) == 1 or (by_time and 0 < ts < self.first_ts):
                self.first_ts = ts
                self.service = record.origin.service
                self.trace_id = trace_id
                if has_span:
                    self.span_id = span_id
            elif not self.span_id and has_span:
                self.span_id = span_id
            if ts > self.last_ts:
                self.last_ts = ts
        self.keys.append(log_key)

    def close(self, reason: str, now: float, by_time: bool) -> None:
        """Mark the session closed (``closed_by``: inactivity, max_length, max_age, memory_cap or
        shutdown) and, with ``by_time``, put it in timestamp order."""
        if by_time:
            self.order_by_time()
        self.closed_by = reason
        self.closed_at = now

    def name(self, label: str) -> None:
        """Set the session key's text (hex trace id, attribute values...) used in ``id``."""
        self.label = label

    def take_records(self) -> list[Record]:
        """Hand over the records (to the forward queue); the session keeps its keys only."""
        records, self.records = self.records, []
        return records

    @property
    def id(self) -> str:
        """Unique within a sidecar run: the key's text and a serial number."""
        return f"{self.label}/{self.serial:x}"

    def order_by_time(self) -> None:
        """Sort ``keys`` (and ``times``, ``records``) by timestamp; equal timestamps keep their
        arrival order. Each record's ``pos`` is moved with its key, so per-key evidence computed on
        the sorted ``keys`` lands on the record it belongs to. A no-op when the keys arrived in
        order (the common case: no sort, no copy) or when ``times`` was not filled."""
        if self.in_order or len(self.times) != len(self.keys):
            return
        times = self.times
        order = sorted(range(len(times)), key=times.__getitem__)  # stable: ties by arrival
        new_pos = [0] * len(order)
        for new, old in enumerate(order):
            new_pos[old] = new
        self.keys = [self.keys[old] for old in order]
        self.times = array("Q", (times[old] for old in order))
        for record in self.records:
            record.pos = new_pos[record.pos]
        self.records.sort(key=_record_pos)
        self.in_order = True


def _record_pos(record: Record) -> int:
    return record.pos


@dataclass(frozen=True)
class Verdict:
    """What scoring concluded about one session (``status`` scored or unscored)."""

    status: str
    model: str = ""
    model_version: str = ""
    score: float | None = None
    threshold: float | None = None
    is_anomaly: bool | None = None
    unexpected: tuple[bool, ...] | None = None  # per key of the session, where the model gives it
    reason: str = ""

    @classmethod
    def unscored(cls, reason: str, model: str = "", model_version: str = "") -> Verdict:
        return cls(status="unscored", model=model, model_version=model_version, reason=reason)
