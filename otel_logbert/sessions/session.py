"""The data the sidecar moves around: where a record came from, the record, the session, the verdict.

Records are kept as *serialized* ``LogRecord`` bytes (see ``otlp.codec``): that is what is forwarded,
it is compact, and it lets a request's decoded messages be freed as soon as the request is ingested.
Classes use ``__slots__`` because hundreds of thousands of them can be alive at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from dataclasses import dataclass


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
    """

    __slots__ = ("data", "origin", "pos")

    def __init__(self, data: bytes, origin: Origin, pos: int = 0) -> None:
        self.data = data
        self.origin = origin
        self.pos = pos


class Session:
    """An open (then closed) session: the log keys of its records, in arrival order, and the records.

    ``keys`` may be longer than ``records``: in sliding windows a record's key also joins the
    overlapping windows that do not own the record. ``closed_by`` says why it closed: inactivity,
    max_length, max_age, memory_cap or shutdown.
    """

    __slots__ = (
        "key",
        "label",
        "serial",
        "lane",
        "keys",
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
        self.records: list[Record] = []
        self.opened = now
        self.last = now
        self.trace_id: bytes = b""
        self.span_id: bytes = b""
        self.first_ts = 0  # unix nanos of the first record (0 = unknown)
        self.last_ts = 0
        self.service = ""
        self.closed_by = ""
        self.closed_at = 0.0

    @property
    def id(self) -> str:
        """Unique within a sidecar run: the key's text and a serial number."""
        return f"{self.label}/{self.serial:x}"


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
