"""sessions.keys: trace id, attributes, regex and window keys on real (lenient) log records."""

from __future__ import annotations

from typing import Any

import pytest

from otel_logbert.otlp.codec import LenientAnyValue, LenientLogRecord
from otel_logbert.sessions.keys import key_rule


def rec(trace_id: bytes = b"", attributes: dict[str, str] | None = None, ts: int = 0) -> Any:
    r = LenientLogRecord(trace_id=trace_id, time_unix_nano=ts)
    for key, value in (attributes or {}).items():
        kv = r.attributes.add()
        kv.key = key.encode()
        kv.value.string_value = value.encode()
    return r


def res(**attrs: str) -> dict[bytes, Any]:
    return {k.replace("_", ".").encode(): LenientAnyValue(string_value=v.encode()) for k, v in attrs.items()}


def test_trace_id_key_and_missing_trace_ids() -> None:
    rule = key_rule("trace_id")
    tid = bytes(range(1, 17))
    assert rule.key(rec(tid), {}, "", 0) == tid
    assert rule.label(tid) == tid.hex()
    assert rule.key(rec(b""), {}, "", 0) is None
    assert rule.key(rec(b"\x00" * 16), {}, "", 0) is None  # all-zero = invalid per W3C/OTLP
    assert rule.key(rec(b"\x01" * 8), {}, "", 0) is None
    assert "trace id" in rule.reason_missing


def test_attribute_key_combines_resource_and_record_values() -> None:
    rule = key_rule("attributes", resource_attributes=["service.name", "k8s.pod.name"],
                    record_attributes=["user.id"])
    key = rule.key(rec(attributes={"user.id": "7"}), res(service_name="cart", k8s_pod_name="p1"), "", 0)
    assert key == ("cart", "p1", "7")
    assert rule.label(key) == "cart|p1|7"
    assert rule.key(rec(), res(service_name="cart"), "", 0) == ("cart", "", "")  # some absent
    assert rule.key(rec(), {}, "", 0) is None  # all absent


def test_regex_key_uses_the_first_group_or_the_match() -> None:
    with_group = key_rule("regex", regex=r"block (blk_-?\d+)")
    assert with_group.needs_text
    assert with_group.key(rec(), {}, "Receiving block blk_-42 src", 0) == "blk_-42"
    assert with_group.key(rec(), {}, "nothing here", 0) is None
    whole = key_rule("regex", regex=r"blk_-?\d+")
    assert whole.key(rec(), {}, "x blk_7 y blk_8", 0) == "blk_7"


def test_tumbling_windows_per_attribute_key() -> None:
    rule = key_rule("window", resource_attributes=["host.name"], window_size_s=60, window_slide_s=60)
    at = 125 * 10**9  # 125 s
    assert rule.placements(rec(ts=at), res(host_name="n1"), "", 0) == [((("n1",), 2), True)]
    assert rule.label((("n1",), 2)) == "n1@120"
    # Without a timestamp the arrival time picks the window.
    assert rule.placements(rec(), res(host_name="n1"), "", 61.0) == [((("n1",), 1), True)]


def test_sliding_windows_give_the_record_to_the_latest_window_and_keys_to_the_others() -> None:
    rule = key_rule("window", window_size_s=60, window_slide_s=20)
    assert rule.multi
    placements = rule.placements(rec(ts=125 * 10**9), {}, "", 0)
    # 125 s lies in the windows starting at 120, 100 and 80 (each 60 s long).
    assert placements == [(((), 6), True), (((), 5), False), (((), 4), False)]
    assert [owned for _, owned in placements].count(True) == 1
    assert rule.label(((), 6)) == "@120"


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError):
        key_rule("spans")
