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

from otel_logbert.otlp.codec import SMALL_VARINTS, varint

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


class LogKey(str):
    """A log key (equal to, and hashing as, the plain ``str`` key, so it works wherever a key does)
    that also carries ``attr``: the serialized attributes every record parsed to this key with this
    template gets (``log.record.template``, plus the truncation flag for a truncated body). A lane
    interns one per key and template, so a session holds the attribute once, not a copy per record.
    """

    attr: bytes

    def __new__(cls, key: str, attr: bytes) -> LogKey:
        self = super().__new__(cls, key)
        self.attr = attr
        return self

    def __getnewargs__(self) -> tuple[str, bytes]:  # type: ignore[override]
        return str(self), self.attr


def key_attr(key: str) -> bytes:
    """The attributes a record takes from its log key: ``LogKey.attr``, nothing for a plain ``str``."""
    return key.attr if isinstance(key, LogKey) else b""


class Record:
    """One log record as handed to and out of a ``Session`` (which stores it more compactly).

    ``data``: the serialized ``LogRecord`` as received, minus any attributes the sidecar owns; the
    record's key's attributes (``key_attr``: ``log.record.template``) are appended by the session
    when it hands the record out. ``pos``: the index of its key in its session's ``keys``.
    ``ticket``: where the persistent queue holds it (``sidecar.wal``; 0 without persistence).
    """

    __slots__ = ("data", "origin", "pos", "ticket")

    def __init__(self, data: bytes, origin: Origin, pos: int = 0, ticket: int = 0) -> None:
        self.data = data
        self.origin = origin
        self.pos = pos
        self.ticket = ticket


Stored = tuple[Origin, bytes, bytes, int, int]  # origin, data, key attributes, pos, ticket


class Session:
    """An open (then closed) session: the log keys of its records and the records.

    While open, ``keys`` are in arrival order. ``times`` (filled only when the store orders by time,
    else empty) holds one unix-nano timestamp per key, from the first timed key on (empty while
    none has a timestamp: they would all be 0); ``in_order`` is False once a key arrived with
    an earlier timestamp than the one before it. ``order_by_time`` puts a closed session in
    timestamp order. ``keys`` may be longer than the records: in sliding windows a record's key also
    joins the overlapping windows that do not own the record. ``closed_by`` says why it closed:
    inactivity, max_length, max_age, memory_cap or shutdown.

    Records are stored compactly, since a sidecar may hold millions: their bytes back to back in one
    ``bytearray``, each preceded by its length as a protobuf varint; one shared origin while they
    all have the same; positions and tickets only once one differs from the default (record ``i`` at
    key ``i``, ticket 0). ``records`` rebuilds ``Record`` objects; ``stored`` is the cheap view.
    """

    __slots__ = (
        "key",
        "label",
        "serial",
        "lane",
        "keys",
        "times",
        "in_order",
        "n_records",
        "_blob",
        "_origin",
        "_origins",
        "_pos",
        "_tickets",
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
        self.times: array | tuple[()] = ()  # per key, unix nanos (see the class docstring)
        self.in_order = True
        self.n_records = 0
        self._blob = bytearray()  # per record: varint length, serialized LogRecord
        self._origin: Origin | None = None  # every record's origin while _origins is None
        self._origins: list[Origin] | None = None  # per record, once two differ
        self._pos: array | None = None  # per record, once one is not at key index == record index
        self._tickets: array | None = None  # per record, once one is not 0
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
        A session whose lead has no span id takes the first span id that arrives. The session keeps
        ``record``'s fields, not the object.
        """
        self.last = now
        if by_time:
            times = self.times
            if times:
                if not ts:
                    ts_key = times[-1]
                else:
                    ts_key = ts
                    if ts < times[-1]:
                        self.in_order = False
                times.append(ts_key)
            elif ts:  # the first timed key: every key before it is untimed, so 0
                self.times = times = array("Q", bytes(8 * len(self.keys)))
                times.append(ts)
        if record is not None:
            self._store(record, len(self.keys))
            has_span = bool(span_id) and span_id != NO_SPAN_ID
            if self.n_records == 1 or (by_time and 0 < ts < self.first_ts):
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

    def _store(self, record: Record, pos: int) -> None:
        n = self.n_records
        if pos != n or self._pos is not None:
            self._note_pos(n, pos)
        origin = record.origin
        if origin is not self._origin or self._origins is not None:
            self._note_origin(n, origin)
        if record.ticket or self._tickets is not None:
            self._note_ticket(n, record.ticket)
        blob, data, size = self._blob, record.data, len(record.data)
        blob += SMALL_VARINTS[size] if size < len(SMALL_VARINTS) else varint(size)
        blob += data
        self.n_records = n + 1

    def _note_pos(self, n: int, pos: int) -> None:
        if self._pos is None:
            self._pos = array("I", range(n))
        self._pos.append(pos)

    def _note_origin(self, n: int, origin: Origin) -> None:
        if self._origins is not None:
            self._origins.append(origin)
        elif n == 0:
            self._origin = origin
        else:
            self._origins = [self._origin] * n + [origin]  # type: ignore[list-item]

    def _note_ticket(self, n: int, ticket: int) -> None:
        if self._tickets is None:
            self._tickets = array("Q", bytes(8 * n))
        self._tickets.append(ticket)

    def stored(self) -> list[Stored]:
        """Every record as ``(origin, data, key attributes, pos, ticket)``, in order: ``data`` without
        the attributes of its key (``key_attr(keys[pos])``), which a forwarded record gets after it."""
        out: list[Stored] = []
        blob = bytes(self._blob)  # one copy, so each record below is one slice
        keys, origins, pos_of, tickets = self.keys, self._origins, self._pos, self._tickets
        origin = self._origin
        at = 0
        for i in range(self.n_records):
            size = blob[at]
            at += 1
            if size > 0x7F:  # a longer varint (records of 128 bytes or more)
                size &= 0x7F
                shift = 7
                while True:
                    byte = blob[at]
                    at += 1
                    size |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
            pos = pos_of[i] if pos_of is not None else i
            key = keys[pos]
            out.append((
                origins[i] if origins is not None else origin,  # type: ignore[arg-type]
                blob[at : at + size],
                key.attr if isinstance(key, LogKey) else b"",
                pos,
                tickets[i] if tickets is not None else 0,
            ))
            at += size
        return out

    @property
    def records(self) -> list[Record]:
        """The records, rebuilt (``data`` with its key's attributes appended). Use ``n_records`` to
        count them and ``stored`` on hot paths."""
        return [Record(data + attr, origin, pos, ticket) for origin, data, attr, pos, ticket in self.stored()]

    @records.setter
    def records(self, records: list[Record]) -> None:
        """Replace the records (their ``data`` kept as is, ``pos`` as given)."""
        self._clear()
        for record in records:
            self._store(record, record.pos)

    def tickets(self) -> list[int]:
        """Every record's ticket, in order."""
        return list(self._tickets) if self._tickets is not None else [0] * self.n_records

    def _clear(self) -> None:
        self.n_records = 0
        self._blob = bytearray()
        self._origin = self._origins = self._pos = self._tickets = None

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

    def drop_records(self) -> None:
        """Let go of the records (handed on already, e.g. via ``stored``); the session keeps its keys."""
        self._clear()

    @property
    def id(self) -> str:
        """Unique within a sidecar run: the key's text and a serial number."""
        return f"{self.label}/{self.serial:x}"

    def order_by_time(self) -> None:
        """Sort ``keys`` (and ``times``, the records) by timestamp; equal timestamps keep their
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
        stored = self.stored()
        self.keys = [self.keys[old] for old in order]
        self.times = array("Q", (times[old] for old in order))
        moved = sorted(((new_pos[pos], origin, data, ticket) for origin, data, _, pos, ticket in stored),
                       key=_first)
        self._clear()
        for pos, origin, data, ticket in moved:
            self._store(Record(data, origin, pos, ticket), pos)
        self.in_order = True


def _first(item: tuple) -> int:
    return item[0]


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
