"""Open sessions, when they close, and the memory cap.

``SessionStore`` keeps every open session in two ``OrderedDict``s, one ordered by last activity and
one by opening time, so each close rule costs O(sessions it closes), never a scan of all of them:

- inactivity: no record for ``inactivity_timeout_s`` (front of the activity order);
- max_age: open for ``max_age_s`` (front of the opening order);
- max_length: ``max_length`` keys; closed by the ``add`` that fills it, the next record of the same
  key opens a new session;
- memory_cap: more than ``max_open_sessions`` open, or more than ``max_buffered_records`` keys
  buffered: the oldest-opened close early (``enforce_limits``, which the caller runs after each
  request, so a single request may overshoot the cap by its own size until then);
- shutdown: ``close_all``.

Order: with ``order="time"`` (the default) a session's keys are scored in timestamp order. The
store keeps one timestamp per key (``time_unix_nano``, else ``observed_time_unix_nano``; a key with
neither takes the timestamp of the key that arrived before it, so it stays where it arrived) and
sorts a session that arrived out of order when it closes (``Session.order_by_time``). OTLP exporters
and Collector batching group a request by resource, so a trace spanning several services usually
arrives out of order. ``order="arrival"`` keeps arrival order and stores no timestamps.

A closed session is removed from the store and handed to the caller; the store never drops one. Not
thread-safe: the sidecar calls it from its event loop only. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Iterable

from otel_logbert.config import SESSION_ORDERS, SessionsConfig
from otel_logbert.sessions.session import Record, Session

Placement = tuple[Hashable, bool]  # (session key, whether that session owns the record)


class SessionStore:
    """Open sessions keyed by any hashable (the sidecar uses ``(lane, session key)``), closed by the
    limits of ``config`` (``sessions.*``: inactivity, length, age, memory caps, order)."""

    def __init__(self, config: SessionsConfig) -> None:
        """Raises ``ValueError`` for an ``order`` other than ``time`` or ``arrival``."""
        if config.order not in SESSION_ORDERS:
            raise ValueError(f"session order must be one of {SESSION_ORDERS}, got {config.order!r}")
        self.config = config
        self.by_time = config.order == "time"
        self._by_activity: OrderedDict[Hashable, Session] = OrderedDict()
        self._by_age: OrderedDict[Hashable, Session] = OrderedDict()
        self._serial = itertools.count(1)
        self.buffered = 0  # keys held by open sessions (>= records held)

    def __len__(self) -> int:
        return len(self._by_age)

    def place(
        self,
        placements: Iterable[Placement],
        lane: int,
        log_key: str,
        record: Record,
        ts: int,
        now: float,
        closed: list[Session],
        trace_id: bytes = b"",
        span_id: bytes = b"",
    ) -> None:
        """Add one record's ``log_key`` to the session ``(lane, key)`` of every placement (``record``
        itself to the one that owns it, with its ``trace_id``/``span_id`` for the lead-record
        bookkeeping); sessions never mix lanes. ``ts``:
        its timestamp in unix nanos (0 = unknown). A session this fills to ``max_length`` is closed
        and appended to ``closed``."""
        for key, owns_record in placements:
            owned = record if owns_record else None
            _, full = self.add((lane, key), lane, log_key, owned, now, ts, trace_id, span_id)
            if full is not None:
                closed.append(full)

    def add(
        self,
        key: Hashable,
        lane: int,
        log_key: str,
        record: Record | None,
        now: float,
        ts: int = 0,
        trace_id: bytes = b"",
        span_id: bytes = b"",
    ) -> tuple[Session, Session | None]:
        """Append ``log_key`` (and ``record``, if this session owns it) to the session of ``key``,
        opening one if needed. Returns ``(session, closed)``: ``closed`` is the session when this
        append filled it to ``max_length`` (it is then no longer in the store, already in order),
        else None."""
        session = self._by_activity.get(key)
        if session is None:
            session = Session(key, next(self._serial), lane, now)
            self._by_activity[key] = session
            self._by_age[key] = session
        else:
            self._by_activity.move_to_end(key)
        session.append(log_key, record, now, ts, self.by_time, trace_id, span_id)
        self.buffered += 1
        if len(session.keys) >= self.config.max_length:
            self._remove(key, session, "max_length", now)
            return session, session
        return session, None

    def expire(self, now: float) -> list[Session]:
        """Close the sessions whose inactivity timeout or max age has passed."""
        closed: list[Session] = []
        idle_before = now - self.config.inactivity_timeout_s
        while self._by_activity:
            key, session = next(iter(self._by_activity.items()))
            if session.last > idle_before:
                break
            self._remove(key, session, "inactivity", now)
            closed.append(session)
        born_before = now - self.config.max_age_s
        while self._by_age:
            key, session = next(iter(self._by_age.items()))
            if session.opened > born_before:
                break
            self._remove(key, session, "max_age", now)
            closed.append(session)
        return closed

    def enforce_limits(self, now: float) -> list[Session]:
        """Close the oldest-opened sessions until both memory caps hold."""
        closed: list[Session] = []
        config = self.config
        while self._by_age and (
            len(self._by_age) > config.max_open_sessions or self.buffered > config.max_buffered_records
        ):
            key, session = next(iter(self._by_age.items()))
            self._remove(key, session, "memory_cap", now)
            closed.append(session)
        return closed

    def close_all(self, now: float, reason: str = "shutdown") -> list[Session]:
        """Close every open session, oldest first."""
        closed = list(self._by_age.items())
        for key, session in closed:
            self._remove(key, session, reason, now)
        return [session for _, session in closed]

    def _remove(self, key: Hashable, session: Session, reason: str, now: float) -> None:
        del self._by_activity[key]
        del self._by_age[key]
        self.buffered -= len(session.keys)
        session.close(reason, now, self.by_time)
