"""Very long sessions (100,000+ keys, as Hadoop containers log): every reader takes them, training
and scoring chunk them, and errors after them still name the file and line."""

from __future__ import annotations

import numpy as np
import pytest

from otel_logbert.errors import InputError
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.raw_sessions import group_raw_lines
from otel_logbert.scoring.batching import score_sessions
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.training.data import read_sessions
from otel_logbert.training.trainer import train_model

LONG = 120_000
FLOW = ["5", "22", "11", "9", "26", "3", "4", "2", "23", "21"]


def long_keys(n: int = LONG) -> list[str]:
    return [FLOW[i % len(FLOW)] for i in range(n)]


def test_csv_field_of_a_long_session(tmp_path):
    path = tmp_path / "sessions.csv"
    text = "block_id,sequence\nblk_1," + " ".join(long_keys()) + "\nblk_2,5 22 11\n"
    assert len(text) > 131_072 * 2  # beyond the csv module's default field limit
    path.write_text(text)
    data = read_sessions(path)
    assert data.ids == ["blk_1", "blk_2"] and len(data.sessions[0]) == LONG


def test_error_after_a_long_session_names_file_and_line(tmp_path):
    path = tmp_path / "sessions.csv"
    path.write_text("blk_1," + " ".join(long_keys()) + "\nblk_2,5 x 11\n")
    with pytest.raises(InputError, match=r"sessions.csv:2: event id 'x' is not an integer"):
        read_sessions(path)
    path.write_text("blk_1," + " ".join(long_keys()) + "\nblk_2,5,11\n")
    with pytest.raises(InputError, match=r"sessions.csv:2: expected 2 CSV fields \(id,sequence\), found 3"):
        read_sessions(path)


def test_deeplog_line_of_a_long_session(tmp_path):
    path = tmp_path / "sessions.txt"
    path.write_text("5 22 11\n" + " ".join(long_keys()) + "\n")
    assert [len(s) for s in read_sessions(path).sessions] == [3, LONG]


def test_raw_lines_of_a_long_session():
    lines = [f"081109 2035{i % 60:02d} 35 INFO dfs.DataNode$PacketResponder: PacketResponder {i % 3} "
             f"for block blk_-42 terminating" for i in range(100_000)]
    grouped = group_raw_lines(lines, r"blk_-?\d+", LogParser(masking="hdfs"), content_regex="hdfs")
    assert [(sid, len(keys)) for sid, keys in grouped.sessions] == [("blk_-42", 100_000)]


def test_long_session_trains_and_scores_in_chunks():
    rng = np.random.default_rng(0)
    short = [FLOW[: int(rng.integers(3, len(FLOW)))] for _ in range(30)]
    sessions = [long_keys()] + short
    model, vocab, threshold, metadata = train_model(
        "fastlogad", sessions, epochs=1, seed=0, progress=False,
        overrides={"max_len": 64, "d_model": 16, "n_heads": 2, "d_ff": 32, "n_layers": 1, "gen_d_model": 8,
                   "gen_d_ff": 16})
    assert metadata["train_chunks"] >= LONG // 64 or metadata["validation_sessions"] >= 1
    shapes = []
    scorer = TorchScorer(model, model_name="fastlogad", model_version="t", batch_size=64)

    def batch(tokens):
        shapes.append(tokens.shape)
        return scorer._run(tokens)

    [result] = score_sessions([vocab.encode(long_keys())], batch, 64, 64)
    assert len(result.unexpected) == LONG  # per-key evidence for every record, in order
    assert sum(s[0] for s in shapes) == -(-LONG // 64)  # one row per chunk
    assert max(s[0] for s in shapes) <= 64 and max(s[1] for s in shapes) <= 64  # bounded batches
    assert np.isfinite(result.score)
