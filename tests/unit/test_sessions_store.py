"""sessions.store: close rules (inactivity, max length, max age, memory cap, shutdown)."""

from __future__ import annotations

import pytest

from otel_logbert.config import SessionsConfig
from otel_logbert.sessions.session import Origin, Record
from otel_logbert.sessions.store import SessionStore

ORIGIN = Origin(None, b"", None, b"", "svc")


def record(n: int = 0) -> Record:
    return Record(f"r{n}".encode(), ORIGIN)


def store(**limits: float) -> SessionStore:
    return SessionStore(SessionsConfig(**limits))  # type: ignore[arg-type]


def test_records_join_their_key_in_order_with_positions() -> None:
    s = store()
    opened = {}
    for i, key in enumerate(["a", "b", "a"]):
        opened[key], _ = s.add(key, 0, f"k{i}", record(i), now=0.0)
    assert len(s) == 2 and s.buffered == 3
    session = opened["a"]
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


def test_close_all_closes_oldest_first() -> None:
    s = store(inactivity_timeout_s=5, max_age_s=7)
    s.add("a", 0, "k", record(), 1.0)
    s.add("b", 0, "k", record(), 2.0)
    closed = s.close_all(3.0)
    assert [c.key for c in closed] == ["a", "b"] and {c.closed_by for c in closed} == {"shutdown"}
    assert len(s) == 0 and s.buffered == 0


def test_key_only_entries_count_but_hold_no_record() -> None:
    s = store()
    s.add("w", 0, "k1", None, 0.0)
    session, _ = s.add("w", 0, "k2", record(), 0.0)
    assert session.keys == ["k1", "k2"]
    assert len(session.records) == 1 and session.records[0].pos == 1


# --- order: sessions are scored in timestamp order -------------------------------------------------

CART = Origin(b"cart", b"", None, b"", "cart")
PAYMENTS = Origin(b"payments", b"", None, b"", "payments")


def add_timed(s: SessionStore, key: str, entries: list[tuple[Origin, str, int]]) -> None:
    """Add ``(origin, log key, ts)`` entries in arrival order; each record's data names its key."""
    for origin, log_key, ts in entries:
        s.add(key, 0, log_key, Record(log_key.encode(), origin), 0.0, ts)


def test_records_from_two_resources_out_of_order_are_scored_in_time_order() -> None:
    # A request grouped by resource: all of payments' records first, then cart's, of one trace.
    s = store()
    add_timed(s, "t", [(PAYMENTS, "pay.start", 30), (PAYMENTS, "pay.done", 40),
                       (CART, "cart.open", 10), (CART, "cart.checkout", 20), (CART, "cart.close", 50)])
    (session,) = s.close_all(1.0)
    assert session.keys == ["cart.open", "cart.checkout", "pay.start", "pay.done", "cart.close"]
    assert list(session.times) == [10, 20, 30, 40, 50]
    # each record's position still points at its own key, and records are in time order too
    assert [(r.data.decode(), r.pos) for r in session.records] == [
        (k, i) for i, k in enumerate(session.keys)]
    assert [r.origin.service for r in session.records] == ["cart", "cart", "payments", "payments", "cart"]


def test_equal_and_missing_timestamps_keep_arrival_order() -> None:
    s = store()
    # observed-only and untimed records: ts 0 takes the previous key's time, so "b" stays after "a"
    add_timed(s, "t", [(CART, "late", 9), (CART, "a", 5), (CART, "b", 0), (CART, "c", 5), (CART, "d", 1)])
    (session,) = s.close_all(1.0)
    assert session.keys == ["d", "a", "b", "c", "late"]


def test_arrival_order_is_kept_when_configured() -> None:
    s = SessionStore(SessionsConfig(order="arrival"))
    add_timed(s, "t", [(PAYMENTS, "pay", 30), (CART, "cart", 10)])
    (session,) = s.close_all(1.0)
    assert session.keys == ["pay", "cart"] and [r.pos for r in session.records] == [0, 1]
    assert len(session.times) == 0  # no timestamps kept at all


def test_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="arrival"):
        SessionStore(SessionsConfig(order="random"))


def test_a_session_that_arrived_in_order_is_not_copied() -> None:
    s = store()
    add_timed(s, "t", [(CART, "a", 1), (CART, "b", 1)])
    open_session, _ = s.add("t", 0, "c", Record(b"c", CART), 0.0, 2)
    keys = open_session.keys
    (session,) = s.close_all(1.0)
    assert session.keys is keys and session.in_order


def test_max_length_close_is_ordered_too() -> None:
    s = store(max_length=2)
    s.add("t", 0, "second", Record(b"2", CART), 0.0, 20)
    _, closed = s.add("t", 0, "first", Record(b"1", CART), 0.0, 10)
    assert closed is not None and closed.keys == ["first", "second"]


def test_window_spill_over_keys_move_with_their_time() -> None:
    # sliding windows: a key without a record of its own sorts by its time like any other
    s = store()
    s.add("w", 0, "own-late", Record(b"late", CART), 0.0, 30)
    s.add("w", 0, "spill-early", None, 0.0, 10)
    s.add("w", 0, "own-mid", Record(b"mid", CART), 0.0, 20)
    (session,) = s.close_all(1.0)
    assert session.keys == ["spill-early", "own-mid", "own-late"]
    assert [(r.data, r.pos) for r in session.records] == [(b"mid", 1), (b"late", 2)]


def test_evidence_lands_on_the_right_record_after_the_sort() -> None:
    from opentelemetry.proto.logs.v1 import logs_pb2

    from otel_logbert.otlp.annotate import Annotator, AttributeNames
    from otel_logbert.sessions.session import Verdict

    s = store()
    for origin, body, ts in [(PAYMENTS, "payment declined", 30), (CART, "cart opened", 10),
                             (CART, "checkout", 20)]:
        data = logs_pb2.LogRecord(body={"string_value": body}).SerializeToString()
        s.add("t", 0, body, Record(data, origin), 0.0, ts)
    (session,) = s.close_all(1.0)
    assert session.keys == ["cart opened", "checkout", "payment declined"]
    # the scorer flags the last key of the time-ordered sequence
    verdict = Verdict("scored", score=1.0, threshold=0.5, is_anomaly=True, unexpected=(False, False, True))
    flags = {}
    for origin, data, suffix in Annotator(AttributeNames()).annotate(session, verdict):
        record = logs_pb2.LogRecord.FromString(data + suffix)
        attrs = {kv.key: kv.value for kv in record.attributes}
        flags[record.body.string_value] = (origin.service, attrs["log.anomaly.unexpected"].bool_value)
    assert flags == {"cart opened": ("cart", False), "checkout": ("cart", False),
                     "payment declined": ("payments", True)}
