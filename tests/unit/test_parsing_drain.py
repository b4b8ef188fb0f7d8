"""LogParser: keys and templates, the non-mining match path, JSON persistence, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from otel_logbert.parsing.drain import EMPTY_KEY, EMPTY_TEMPLATE, LogParser, ParseResult, plain_miner
from otel_logbert.parsing.persistence import file as file_persistence
from otel_logbert.parsing.raw_sessions import hdfs_content

HDFS_RAW = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hdfs_raw"
needs_hdfs = pytest.mark.skipif(not HDFS_RAW.is_dir(), reason=f"dataset folder {HDFS_RAW} absent")


def hdfs_messages(name: str = "HDFS_5k.log") -> list[str]:
    with open(HDFS_RAW / name, encoding="utf-8", errors="replace") as f:
        return [hdfs_content(line.rstrip("\n")) for line in f]


def test_same_shape_same_key_and_new_flag():
    parser = LogParser("hdfs")
    first = parser.parse("Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010")
    again = parser.parse("Receiving block blk_-2 src: /10.0.0.7:6000 dest: /10.0.0.8:50010")
    other = parser.parse("Verification succeeded for blk_3")
    assert first.new and not again.new and other.new
    assert first.key == again.key != other.key
    assert first.template == "Receiving block <BLK> src: /<ADDR> dest: /<ADDR>"
    assert not first.truncated


def test_parse_result_is_frozen():
    result = LogParser().parse("hello world")
    with pytest.raises(AttributeError):
        result.key = "x"  # type: ignore[misc]
    assert isinstance(result, ParseResult)


def test_key_is_stable_when_template_generalises():
    parser = LogParser("default", sim_th=0.5)
    a = parser.parse("user alice logged in from office")
    b = parser.parse("user bob logged in from office")
    assert a.key == b.key
    assert a.template == "user alice logged in from office"
    assert b.template == "user <*> logged in from office"
    assert parser.match("user carol logged in from office").key == a.key


def test_match_never_mines():
    parser = LogParser("hdfs")
    known = parser.parse("PacketResponder 1 for block blk_5 terminating")
    state = json.dumps(parser.to_json())
    assert parser.match("PacketResponder 2 for block blk_9 terminating") == ParseResult(
        known.key, known.template, False, False
    )
    assert parser.match("a message nobody has seen") is None
    assert parser.match("") == ParseResult(EMPTY_KEY, EMPTY_TEMPLATE, False, False)
    assert json.dumps(parser.to_json()) == state  # no cluster, size or counter changed


@needs_hdfs
def test_parse_agrees_with_plain_drain3_on_hdfs():
    """The fast path changes speed, not answers: same clusters as drain3 with the same masking."""
    messages = hdfs_messages()
    parser, miner = LogParser("hdfs"), plain_miner("hdfs")
    for message in messages:
        assert parser.parse(message).key == str(miner.add_log_message(message)["cluster_id"])
    assert parser.templates() == {str(c.cluster_id): c.get_template() for c in miner.drain.clusters}


@needs_hdfs
def test_known_shapes_skip_drain_search(monkeypatch):
    """The serve-time path answers seen message shapes from its cache, without Drain's tree search
    (what makes it faster than add_log_message: measured in benchmarks/parse_throughput.py, not here)."""
    messages = hdfs_messages()
    parser = LogParser("hdfs")
    expected = [parser.parse(message).key for message in messages]

    def no_search(*args, **kwargs):
        raise AssertionError("Drain tree search on a known shape")

    monkeypatch.setattr(parser.drain, "match", no_search)
    monkeypatch.setattr(parser.drain, "add_log_message", no_search)
    assert [parser.match(m).key for m in messages] == expected
    assert [parser.parse(m).key for m in messages] == expected


@needs_hdfs
def test_json_round_trip_gives_identical_keys():
    messages = hdfs_messages()
    train, rest = messages[:1500], messages[1500:]
    parser = LogParser("hdfs", custom_masking=[{"regex": r"job_\d+_\d+", "mask_with": "JOB"}])
    for message in train:
        parser.parse(message)
    restored = LogParser.from_json(json.loads(json.dumps(parser.to_json())))
    assert restored.to_json() == parser.to_json()
    assert restored.rules[0].mask_with == "JOB"
    # Mining goes on identically on both, new clusters and generalisations included.
    for message in rest + ["never seen before 1", "never seen before 2"]:
        assert restored.parse(message) == parser.parse(message)
    assert restored.to_json() == parser.to_json()


def test_from_json_without_tree_rebuilds_it():
    parser = LogParser("default")
    for text in ["disk sda1 is full", "disk sdb2 is full", "fan 3 failed", "service started"]:
        parser.parse(text)
    state = parser.to_json()
    del state["tree"]
    restored = LogParser.from_json(state)
    for text in ["disk sdc9 is full", "fan 7 failed", "service started"]:
        assert restored.match(text).key == parser.match(text).key


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(format="something-else"),
        lambda s: s.pop("clusters"),
        lambda s: s.update(masking="no-such-preset"),
        lambda s: s["clusters"].append({"id": 99}),
    ],
)
def test_from_json_rejects_broken_states(mutate):
    parser = LogParser()
    parser.parse("hello world")
    state = parser.to_json()
    mutate(state)
    with pytest.raises(ValueError):
        LogParser.from_json(state)


def test_save_load_is_atomic(tmp_path, monkeypatch):
    parser = LogParser("linux")
    parser.parse("session opened for user root by (uid=0)")
    path = tmp_path / "state" / "drain.json"
    parser.save(path)
    assert LogParser.load(path).to_json() == parser.to_json()

    parser.parse("another template entirely here")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(file_persistence.os, "fsync", fail)  # the new state is written, not yet durable
    with pytest.raises(OSError, match="disk full"):
        parser.save(path)
    assert LogParser.load(path).cluster_count == 1  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["drain.json"]  # no temp file left


# --- bad input ----------------------------------------------------------------------------------------


def _survives(parser: LogParser, text) -> ParseResult:
    result = parser.parse(text)
    assert result.template.encode("utf-8")  # always valid UTF-8: safe for OTLP attributes
    assert parser.match(text) is not None
    json.dumps(parser.to_json()).encode("utf-8")  # the state stays serialisable
    return result


@pytest.mark.parametrize("text", ["", "   ", "\n\t\r\n"])
def test_empty_bodies_get_the_fixed_key(text):
    result = _survives(LogParser(), text)
    assert result == ParseResult(EMPTY_KEY, EMPTY_TEMPLATE, False, False)


def test_binary_garbage_and_invalid_utf8():
    rng = random.Random(7)
    parser = LogParser()
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        _survives(parser, blob)  # raw bytes
        _survives(parser, blob.decode("latin-1"))  # control characters, NULs
        _survives(parser, blob.decode("utf-8", errors="surrogateescape"))  # lone surrogates
    result = _survives(parser, "bad \udcff\ud800 surrogates")
    assert "\ufffd" in result.template and "\udcff" not in result.template


def test_one_megabyte_line_is_truncated_for_parsing_only():
    parser = LogParser(max_line_chars=8192)
    body = "payload " + "A1b2 " * 200_000 + "end"
    original = str(body)
    result = _survives(parser, body)
    assert result.truncated
    assert len(result.template) < 2 * 8192
    assert body == original
    assert not parser.parse("short line").truncated
    # The same long body maps to the same key every time.
    assert parser.parse(body).key == result.key


def test_json_bodies_are_split_on_commas_in_the_kubernetes_preset():
    parser = LogParser("kubernetes")
    a = parser.parse('{"level":"info","msg":"login","user":"alice","took":"12ms"}')
    b = parser.parse('{"level":"info","msg":"login","user":"bob","took":"7ms"}')
    c = parser.parse('{"level":"error","msg":"db down","user":"bob","took":"1s"}')
    assert a.key == b.key != c.key
    assert b.template == '{"level":"info" "msg":"login" <*> "took":"<DURATION>"}'
