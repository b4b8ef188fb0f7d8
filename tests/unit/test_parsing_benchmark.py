"""parse-bench: the GA/PA metrics on hand-made cases, and the command on two Loghub systems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otel_logbert.cli import main
from otel_logbert.parsing.benchmark import grouping_accuracy, normalise_template, parsing_accuracy

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "loghub_2k"


def test_grouping_accuracy_definition():
    truth = ["E1", "E1", "E2", "E2", "E3"]
    assert grouping_accuracy(["a", "a", "b", "b", "c"], truth) == 1.0
    # E2 split in two: its 2 messages are wrong, the rest right.
    assert grouping_accuracy(["a", "a", "b", "x", "c"], truth) == pytest.approx(3 / 5)
    # E1 and E2 merged: 4 wrong.
    assert grouping_accuracy(["a", "a", "a", "a", "c"], truth) == pytest.approx(1 / 5)
    assert grouping_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        grouping_accuracy(["a"], [])


def test_parsing_accuracy_normalises_wildcards():
    assert normalise_template("Receiving  block <BLK> src: /<ADDR>") == "Receiving block <*> src: /<*>"
    assert normalise_template("size <*><*> end") == "size <*> end"
    predicted = ["Took <NUM> seconds", "open <PATH>", "x <*>"]
    truth = ["Took <*> seconds", "open <*>", "y <*>"]
    assert parsing_accuracy(predicted, truth) == pytest.approx(2 / 3)


@pytest.mark.skipif(not LOGHUB.is_dir(), reason=f"dataset folder {LOGHUB} absent")
def test_parse_bench_command_on_two_systems(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["parse-bench", "--loghub", str(LOGHUB), "--systems", "HDFS", "OpenStack", "--json", str(out)]
    code = main(args)
    assert code == 0
    table = capsys.readouterr().out
    assert "HDFS" in table and "OpenStack" in table and "average" in table
    result = json.loads(out.read_text())
    ga = {row["system"]: row["grouping_accuracy"] for row in result["systems"]}
    assert ga["HDFS"] >= 0.95
    assert ga["OpenStack"] >= 0.9  # stock drain3 settings give 0.30 here
    assert result["average"]["min_grouping_accuracy"] == min(ga.values())
    assert all(row["lines"] == 2000 and row["lines_per_s"] > 0 for row in result["systems"])


def test_parse_bench_unknown_system_is_a_user_error(tmp_path, capsys):
    (tmp_path / "HDFS").mkdir()
    assert main(["parse-bench", "--loghub", str(tmp_path), "--systems", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
