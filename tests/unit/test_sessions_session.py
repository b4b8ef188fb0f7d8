"""sessions.session: the compact record storage of ``Session`` gives back exactly what was put in."""

from __future__ import annotations

import pickle

from otel_logbert.sessions.session import LogKey, Origin, Record, Session, key_attr

CART = Origin(None, b"", None, b"", "cart")
PAY = Origin(b"r", b"", None, b"", "payments")


def test_records_round_trip_with_key_attributes_origins_tickets_and_long_data() -> None:
    a, b = LogKey("1", b"<tmpl 1>"), LogKey("2", b"<tmpl 2>")
    long = bytes(range(256)) * 70  # 17,920 bytes: a three-byte length prefix
    s = Session(("lane", "k"), 1, 0, 0.0)
    s.append(a, Record(b"x", CART), 0.0, 0, by_time=False)
    s.append(b, Record(long, PAY, ticket=7), 0.0, 0, by_time=False)
    s.append("plain", Record(b"", CART), 0.0, 0, by_time=False)
    assert s.n_records == 3 and s.tickets() == [0, 7, 0]
    assert [(r.data, r.origin, r.pos, r.ticket) for r in s.records] == [
        (b"x<tmpl 1>", CART, 0, 0), (long + b"<tmpl 2>", PAY, 1, 7), (b"", CART, 2, 0)]
    assert [(o, d, attr) for o, d, attr, _, _ in s.stored()] == [
        (CART, b"x", b"<tmpl 1>"), (PAY, long, b"<tmpl 2>"), (CART, b"", b"")]
    taken = s.records
    s.drop_records()
    assert len(taken) == 3 and s.n_records == 0 and s.records == [] and s.keys == [a, b, "plain"]


def test_keys_without_records_keep_positions_and_sorting_moves_records_with_their_keys() -> None:
    s = Session(("lane", "w"), 1, 0, 0.0)
    s.append("own-late", Record(b"late", CART), 0.0, 30, by_time=True)
    s.append("other", None, 0.0, 10, by_time=True)  # a sliding window's key: no record here
    s.append("own-mid", Record(b"mid", PAY, ticket=3), 0.0, 20, by_time=True)
    assert [(r.data, r.pos) for r in s.records] == [(b"late", 0), (b"mid", 2)]
    s.close("inactivity", 1.0, by_time=True)
    assert s.keys == ["other", "own-mid", "own-late"] and list(s.times) == [10, 20, 30]
    assert [(r.data, r.origin, r.pos, r.ticket) for r in s.records] == [(b"mid", PAY, 1, 3), (b"late", CART, 2, 0)]


def test_untimed_keys_before_the_first_timed_one_count_as_zero() -> None:
    s = Session(("lane", "t"), 1, 0, 0.0)
    s.append("u1", Record(b"1", CART), 0.0, 0, by_time=True)
    s.append("u2", Record(b"2", CART), 0.0, 0, by_time=True)
    assert len(s.times) == 0  # nothing stored while no key has a timestamp
    s.append("t", Record(b"3", CART), 0.0, 50, by_time=True)
    s.append("early", Record(b"4", CART), 0.0, 5, by_time=True)
    assert list(s.times) == [0, 0, 50, 5] and not s.in_order
    s.close("inactivity", 1.0, by_time=True)
    assert s.keys == ["u1", "u2", "early", "t"]


def test_log_key_is_its_plain_key_and_pickles_with_its_attributes() -> None:
    key = LogKey("42", b"attr")
    assert key == "42" and hash(key) == hash("42") and {"42": 1}[key] == 1 and f"{key}" == "42"
    again = pickle.loads(pickle.dumps(key))
    assert again == "42" and again.attr == b"attr" and key_attr(again) == b"attr" and key_attr("42") == b""
