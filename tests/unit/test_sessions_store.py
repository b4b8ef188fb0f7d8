"""sessions.store: close rules (inactivity, max length, max age, memory cap, shutdown)."""

from __future__ import annotations

from otel_logbert.sessions.session import Origin, Record
from otel_logbert.sessions.store import SessionLimits, SessionStore

ORIGIN = Origin(None, b"", None, b"", "svc")


def record(n: int = 0) -> Record:
    return Record(f"r{n}".encode(), ORIGIN)


def store(**limits: float) -> SessionStore:
    return SessionStore(SessionLimits(**limits))  # type: ignore[arg-type]


def test_records_join_their_key_in_order_with_positions() -> None:
    s = store()
    for i, key in enumerate(["a", "b", "a"]):
        s.add(key, 0, f"k{i}", record(i), now=0.0)
    assert len(s) == 2 and s.buffered == 3
    session = s.get("a")
    assert session is not None
    assert session.keys == ["k0", "k2"]
    assert [r.data for r in session.records] == [b"r0", b"r2"]
    assert [r.pos for r in session.records] == [0, 1]


def test_max_length_closes_on_the_filling_add_and_the_key_starts_over() -> None:
    s = store(max_length=2)
    assert s.add("a", 0, "k", record(), 0.0)[1] is None
    session, closed = s.add("a", 0, "k", record(), 0.0)
    assert closed is session and session.closed_by == "max_length" and len(s) == 0 and s.buffered == 0
    fresh, _ = s.add("a", 0, "k", record(), 0.0)
    assert fresh is not session and fresh.serial != session.serial


def test_inactivity_closes_only_idle_sessions() -> None:
    s = store(inactivity_timeout_s=5, max_age_s=100)
    s.add("old", 0, "k", record(), now=0.0)
    s.add("busy", 0, "k", record(), now=0.0)
    s.add("busy", 0, "k", record(), now=4.0)
    closed = s.expire(now=5.0)
    assert [c.key for c in closed] == ["old"] and closed[0].closed_by == "inactivity"
    assert s.expire(now=8.9) == []
    assert [c.key for c in s.expire(now=9.0)] == ["busy"]


def test_max_age_closes_busy_sessions() -> None:
    s = store(inactivity_timeout_s=5, max_age_s=10)
    for t in range(0, 12, 2):
        closed = s.expire(now=float(t))
        if closed:
            break
        s.add("chatty", 0, "k", record(), now=float(t))
    assert [c.closed_by for c in closed] == ["max_age"]
    assert len(closed[0].keys) == 5  # t = 0, 2, 4, 6, 8


def test_memory_cap_on_sessions_closes_the_oldest_first() -> None:
    s = store(max_open_sessions=2)
    for key in "abc":
        s.add(key, 0, "k", record(), 0.0)
    s.add("a", 0, "k", record(), 0.0)  # activity does not make "a" younger
    closed = s.enforce_limits(0.0)
    assert [c.key for c in closed] == ["a"] and closed[0].closed_by == "memory_cap"
    assert len(closed[0].records) == 2  # scored on what it has
    assert len(s) == 2


def test_memory_cap_on_buffered_records() -> None:
    s = store(max_buffered_records=3)
    for key in "aabb":
        s.add(key, 0, "k", record(), 0.0)
    closed = s.enforce_limits(0.0)
    assert [c.key for c in closed] == ["a"] and s.buffered == 2


def test_close_all_and_next_deadline() -> None:
    s = store(inactivity_timeout_s=5, max_age_s=7)
    assert s.next_deadline() is None
    s.add("a", 0, "k", record(), 1.0)
    s.add("b", 0, "k", record(), 2.0)
    assert s.next_deadline() == 6.0
    closed = s.close_all(3.0)
    assert [c.key for c in closed] == ["a", "b"] and {c.closed_by for c in closed} == {"shutdown"}
    assert len(s) == 0 and s.buffered == 0


def test_key_only_entries_count_but_hold_no_record() -> None:
    s = store()
    s.add("w", 0, "k1", None, 0.0)
    s.add("w", 0, "k2", record(), 0.0)
    session = s.get("w")
    assert session is not None and session.keys == ["k1", "k2"]
    assert len(session.records) == 1 and session.records[0].pos == 1
