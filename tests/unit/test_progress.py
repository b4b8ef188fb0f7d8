"""Progress bars: live on a terminal, a few plain lines when stderr is a file (a log)."""

from __future__ import annotations

import io

from otel_logbert.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_the_bar_writes_plain_lines_not_carriage_returns() -> None:
    log = io.StringIO()
    with progress_bar(total=10_000, desc="send", unit="rec", file=log) as bar:
        for _ in range(10_000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3  # the start, maybe one more, the end: not one per update
    assert lines[-1].startswith("send: 100%") and "10000/10000" in lines[-1]


def test_on_a_terminal_the_bar_redraws_in_place() -> None:
    terminal = Terminal()
    with progress_bar(total=3, desc="train", unit="step", file=terminal) as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in terminal.getvalue()


def test_disabled_shows_nothing() -> None:
    log = io.StringIO()
    with progress_bar(total=3, desc="x", unit="s", enabled=False, file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""
