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
from collections.abc import Hashable
from dataclasses import dataclass

from otel_logbert.sessions.session import Record, Session

ORDER_TIME = "time"
ORDER_ARRIVAL = "arrival"
ORDERS = (ORDER_TIME, ORDER_ARRIVAL)


@dataclass(frozen=True)
class SessionLimits:
    inactivity_timeout_s: float = 5.0
    max_length: int = 512
    max_age_s: float = 60.0
    max_open_sessions: int = 200_000
    max_buffered_records: int = 2_000_000


class SessionStore:
    """Open sessions keyed by any hashable (the sidecar uses ``(lane, session key)``)."""

    def __init__(self, limits: SessionLimits, order: str = ORDER_TIME) -> None:
        """``order``: ``"time"`` or ``"arrival"`` (see the module docstring); raises ``ValueError``
        for anything else."""
        if order not in ORDERS:
            raise ValueError(f"session order must be one of {ORDERS}, got {order!r}")
        self.limits = limits
        self.by_time = order == ORDER_TIME
        self._by_activity: OrderedDict[Hashable, Session] = OrderedDict()
        self._by_age: OrderedDict[Hashable, Session] = OrderedDict()
        self._serial = itertools.count(1)
        self.buffered = 0  # keys held by open sessions (>= records held)

    def __len__(self) -> int:
        return len(self._by_age)

    def get(self, key: Hashable) -> Session | None:
        return self._by_age.get(key)

    def add(
        self, key: Hashable, lane: int, log_key: str, record: Record | None, now: float, ts: int = 0
    ) -> tuple[Session, Session | None]:
        """Append ``log_key`` (and ``record``, if this session owns it) to the session of ``key``,
        opening one if needed. ``ts``: the record's timestamp in unix nanos (0 = unknown), used when
        ordering by time. Returns ``(session, closed)``: ``closed`` is the session when this append
        filled it to ``max_length`` (it is then no longer in the store, already in order), else
        None."""
        session = self._by_activity.get(key)
        if session is None:
            session = Session(key, next(self._serial), lane, now)
            self._by_activity[key] = session
            self._by_age[key] = session
        else:
            self._by_activity.move_to_end(key)
        session.last = now
        if record is not None:
            record.pos = len(session.keys)
            session.records.append(record)
        session.keys.append(log_key)
        if self.by_time:
            times = session.times
            if times:
                if not ts:
                    ts = times[-1]  # untimed: stays after the key that arrived before it
                elif ts < times[-1]:
                    session.in_order = False
            times.append(ts)
        self.buffered += 1
        if len(session.keys) >= self.limits.max_length:
            self._remove(key, session, "max_length", now)
            return session, session
        return session, None

    def expire(self, now: float) -> list[Session]:
        """Close the sessions whose inactivity timeout or max age has passed."""
        closed: list[Session] = []
        idle_before = now - self.limits.inactivity_timeout_s
        while self._by_activity:
            key, session = next(iter(self._by_activity.items()))
            if session.last > idle_before:
                break
            self._remove(key, session, "inactivity", now)
            closed.append(session)
        born_before = now - self.limits.max_age_s
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
        limits = self.limits
        while self._by_age and (
            len(self._by_age) > limits.max_open_sessions or self.buffered > limits.max_buffered_records
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

    def next_deadline(self) -> float | None:
        """The monotonic time at which ``expire`` would next close something (None: nothing open)."""
        if not self._by_age:
            return None
        idle = next(iter(self._by_activity.values())).last + self.limits.inactivity_timeout_s
        aged = next(iter(self._by_age.values())).opened + self.limits.max_age_s
        return min(idle, aged)

    def _remove(self, key: Hashable, session: Session, reason: str, now: float) -> None:
        del self._by_activity[key]
        del self._by_age[key]
        self.buffered -= len(session.keys)
        if self.by_time:
            session.order_by_time()
        session.closed_by = reason
        session.closed_at = now
