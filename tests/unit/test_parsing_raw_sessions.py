"""Raw log lines -> sessions: id extraction, multi-id lines, skipped lines, header stripping."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.raw_sessions import (
    HDFS_SESSION_REGEX,
    ContentExtractor,
    group_raw_lines,
    hdfs_content,
    sessions_from_raw_lines,
)

HDFS_RAW = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hdfs_raw"


@pytest.mark.skipif(not HDFS_RAW.is_dir(), reason=f"dataset folder {HDFS_RAW} absent")
def test_hdfs_5k_groups_into_its_110_blocks():
    parser = LogParser("hdfs")
    with open(HDFS_RAW / "HDFS_5k.log", encoding="utf-8", errors="replace") as f:
        grouped = group_raw_lines(f, HDFS_SESSION_REGEX, parser, content_regex="hdfs")
    with open(HDFS_RAW / "HDFS_5k.log.block_labels.csv", newline="") as f:
        mentions = {row["BlockId"]: int(row["LinesInFile"]) for row in csv.DictReader(f)}
    assert len(grouped.sessions) == 110
    assert grouped.lines == 4519 and grouped.skipped == 0
    assert {block for block, _ in grouped.sessions} == set(mentions)
    # LinesInFile counts mentions; "Deleting block blk_X file .../blk_X" mentions a block twice.
    lengths = {block: len(keys) for block, keys in grouped.sessions}
    assert all(lengths[block] <= n for block, n in mentions.items())
    with open(HDFS_RAW / "HDFS_5k.log", encoding="utf-8", errors="replace") as f:
        lines_naming = Counter(b for line in f for b in set(re.findall(r"blk_-?\d+", line)))
    assert lengths == dict(lines_naming)
    assert grouped.sessions[0][0] == "blk_-1608999687919862906"  # first-seen order
    # Headers were stripped: every template starts with the message, not a date.
    assert not any(t[:6].isdigit() for t in parser.templates().values())
    assert parser.cluster_count < 40


def test_a_line_naming_two_ids_joins_both_sessions_and_unmatched_lines_are_skipped():
    lines = [
        "copy blk_1 to blk_2\n",
        "no id on this line\n",
        "done blk_2\n",
        "copy blk_1 to blk_1 again\n",  # the same id twice counts once
    ]
    parser = LogParser("hdfs")
    grouped = group_raw_lines(lines, r"blk_\d+", parser)
    assert [sid for sid, _ in grouped.sessions] == ["blk_1", "blk_2"]
    blk1, blk2 = (keys for _, keys in grouped.sessions)
    assert len(blk1) == 2 and len(blk2) == 2 and blk1[0] == blk2[0]
    assert (grouped.lines, grouped.skipped) == (4, 1)
    assert sessions_from_raw_lines(lines, r"blk_\d+", LogParser("hdfs")) == grouped.sessions


def test_first_capture_group_is_the_session_id():
    lines = ["GET /a request_id=abc1 200", "GET /b request_id=xyz9 500", "POST /c request_id=abc1 201"]
    sessions = sessions_from_raw_lines(lines, r"request_id=(\w+)", LogParser())
    assert [(sid, len(keys)) for sid, keys in sessions] == [("abc1", 2), ("xyz9", 1)]


def test_hdfs_content_strips_the_header():
    line = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for blk_38 terminating"
    assert hdfs_content(line) == "PacketResponder 1 for blk_38 terminating"
    assert hdfs_content("not an hdfs line") == "not an hdfs line"


def test_content_regex_group_choice():
    assert ContentExtractor(r"^\S+ (?P<content>.*)$")("HEADER the message") == "the message"
    assert ContentExtractor(r"^\S+ \S+ (.*)$")("a b the message") == "the message"
    assert ContentExtractor(r"message")("a b the message") == "message"
    with pytest.raises(ValueError, match="invalid content regex"):
        ContentExtractor("(")
    with pytest.raises(ValueError, match="invalid session regex"):
        sessions_from_raw_lines(["x"], "(", LogParser())
