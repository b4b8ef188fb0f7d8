"""Window sessions from raw log lines (``parsing.windows``, ``train --window``): specs, tumbling and
sliding windows over lines and over time, the BGL label field kept out of the parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otel_logbert.bundle import load_bundle
from otel_logbert.cli import main
from otel_logbert.errors import InputError
from otel_logbert.parsing.windows import WindowSpec, window_sessions
from otel_logbert.training.data import RawWindows, read_sessions

BGL = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "bgl_raw"


def bgl_line(label: str, seconds: int, message: str) -> str:
    return (f"{label} {seconds} 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.363779 R02-M1-N0-C:J12-U11 "
            f"RAS KERNEL INFO {message}")


@pytest.mark.parametrize(("text", "expected"), [
    ("100", WindowSpec(100, 100, False)), ("100/20", WindowSpec(100, 20, False)),
    ("300s", WindowSpec(300.0, 300.0, True)), ("300s/60s", WindowSpec(300.0, 60.0, True)),
])
def test_window_specs(text, expected):
    assert WindowSpec.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("10/20", "step must be <= size"), ("300s/60", "both be seconds"), ("abc", "expected SIZE"),
    ("0", "must be > 0"),
])
def test_bad_window_specs_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        WindowSpec.parse(text)


def test_tumbling_and_sliding_line_windows():
    lines = [f"m{i}" for i in range(7)]
    tumbling = window_sessions(lines, WindowSpec.parse("3"), str)
    assert [w.keys for w in tumbling] == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]
    sliding = window_sessions(lines, WindowSpec.parse("4/2"), str)
    assert [w.lines for w in sliding] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6], [6]]
    assert [w.start for w in sliding] == [0, 2, 4, 6]


def test_time_windows_place_lines_as_the_sidecar_does():
    """Window i covers [i*step, i*step + size): as sessions.key: window (size_s, slide_s)."""
    lines = [bgl_line("-", t, f"event at {t}") for t in (100, 119, 120, 185)]
    tumbling = window_sessions(lines, WindowSpec.parse("60s"), str, "bgl", "bgl")
    assert [(w.start, w.lines) for w in tumbling] == [(60.0, [0, 1]), (120.0, [2]), (180.0, [3])]
    sliding = window_sessions(lines, WindowSpec.parse("60s/30s"), str, "bgl", "bgl")
    assert [(w.start, w.lines) for w in sliding] == [(60.0, [0, 1]), (90.0, [0, 1, 2]), (120.0, [2]),
                                                     (150.0, [3]), (180.0, [3])]
    with pytest.raises(ValueError, match="time windows need a timestamp regex"):
        window_sessions(lines, WindowSpec.parse("60s"), str)
    with pytest.raises(ValueError, match="line 1: no timestamp"):
        window_sessions(["no header here"], WindowSpec.parse("60s"), str, None, "bgl")


def test_bgl_content_regex_keeps_the_alert_label_out_of_the_message():
    lines = [bgl_line("-", 1, "instruction cache parity error corrected"),
             bgl_line("KERNDTLB", 2, "instruction cache parity error corrected")]
    (window,) = window_sessions(lines, WindowSpec.parse("2"), str, "bgl")
    assert window.keys == ["instruction cache parity error corrected"] * 2


def test_read_sessions_windows_the_real_bgl_log():
    data = read_sessions(BGL / "BGL_5000.log", masking="bgl", window=RawWindows("100/50", "bgl"))
    assert len(data.sessions) == 101  # starts 0, 50, ..., 5000 over 5,001 lines
    assert [len(s) for s in data.sessions[:2]] == [100, 100] and len(data.sessions[-1]) == 1
    assert data.ids[:2] == ["window@0", "window@50"] and data.drain_state is not None
    timed = read_sessions(BGL / "BGL_5000.log", masking="bgl", window=RawWindows("300s", "bgl", "bgl"))
    assert sum(len(s) for s in timed.sessions) == 5001  # tumbling: each line in exactly one window
    with pytest.raises(InputError, match="BGL_5000.log.*time windows need a timestamp regex"):
        read_sessions(BGL / "BGL_5000.log", window=RawWindows("300s"))


def test_train_with_windows_on_raw_lines(tmp_path):
    out = tmp_path / "bundle"
    assert main(["train", "--model", "logbert", "--train", str(BGL / "BGL_5000.log"), "--window", "100/50",
                 "--content-regex", "bgl", "--masking", "bgl", "--out", str(out), "--epochs", "1", "--set",
                 "max_len=32", "--set", "d_model=32", "--set", "n_layers=1", "--set", "n_heads=2",
                 "--set", "d_ff=64", "--quiet", "--no-export"]) == 0
    bundle = load_bundle(out)
    assert bundle.drain_state is not None and bundle.metadata["sessions_in_file"] == 101
    assert bundle.metadata["window"]["spec"] == "100/50"
    assert json.loads((out / "baselines.json").read_text())["train_sessions"] == 81
    assert main(["train", "--model", "logbert", "--train", str(BGL / "BGL_5000.log"), "--window", "10",
                 "--session-regex", "x", "--out", str(out)]) == 2
