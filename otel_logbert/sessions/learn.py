"""Learn mode: closed sessions written out as training data for ``otel-logbert train``.

Format (what ``train`` reads): UTF-8 text, one session per line, its log keys (Drain3 cluster ids)
separated by single spaces, in arrival order. Beside it, ``<output stem>.drain3.json`` holds the
parser state those ids come from (``LogParser.save``), so the trained bundle can carry it and
serving parses into the same ids. Lines are appended: a restarted sidecar adds to the file (its
parser state file continues the same ids when ``parsing.state_file`` is set).

Every closed session is written, including those closed early (memory cap, shutdown): they are
normal traffic, only shorter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from otel_logbert.parsing.drain import LogParser

FLUSH_INTERVAL_S = 1.0  # lines reach the file at least this often
STATE_INTERVAL_S = 30.0  # and the parser state at least this often (it can be megabytes)


def parser_state_path(output: str | Path) -> Path:
    """Where the parser state of a learn ``output`` goes: ``s.txt`` -> ``s.drain3.json``."""
    p = Path(output)
    return p.with_name(f"{p.stem}.drain3.json")


class LearnWriter:
    """Appends sessions to ``output``; ``close`` flushes and saves ``parser``'s state beside it."""

    def __init__(self, output: str | Path, parser: LogParser) -> None:
        self.output = Path(output)
        self.parser = parser
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(self.output, "a", encoding="utf-8")  # noqa: SIM115
        self._flushed = self._saved = time.monotonic()
        self.sessions = 0

    def write(self, keys: Sequence[str]) -> None:
        """Append one session (keys must contain no whitespace; Drain3 ids never do)."""
        assert self._file is not None, "LearnWriter is closed"
        self._file.write(" ".join(keys) + "\n")
        self.sessions += 1
        now = time.monotonic()
        if now - self._flushed >= FLUSH_INTERVAL_S:
            self.flush()
        if now - self._saved >= STATE_INTERVAL_S:
            self.save_state()

    def flush(self) -> None:
        """Push written lines to the file."""
        if self._file is not None:
            self._file.flush()
            self._flushed = time.monotonic()

    def save_state(self) -> None:
        """Save the parser state beside the output (atomically)."""
        self.parser.save(parser_state_path(self.output))
        self._saved = time.monotonic()

    def close(self) -> None:
        """Flush, save the parser state, close; idempotent."""
        if self._file is not None:
            self.flush()
            self.save_state()
            self._file.close()
            self._file = None
