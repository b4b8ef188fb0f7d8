"""Learn mode: closed sessions written out as training data for ``otel-logbert train``.

Format (what ``train`` reads): UTF-8 text, one session per line, its log keys (Drain3 cluster ids)
separated by single spaces, in arrival order. Beside it, ``<output stem>.drain3.json`` holds the
parser state those ids come from, so the trained bundle can carry it and serving parses into the
same ids. That file is one more handler of the lane's ``ParserPersister``: it is written with the
lane's other parser state, when the parser changed, off the event loop (``parsing.persistence``).
Lines are appended: a restarted sidecar adds to the file (its parser state file continues the same
ids when ``parsing.state_file`` is set).

Every closed session is written, including those closed early (memory cap, shutdown): they are
normal traffic, only shorter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from otel_logbert.parsing.persistence import FilePersistence, ParserPersister

FLUSH_INTERVAL_S = 1.0  # lines reach the file at least this often


def parser_state_path(output: str | Path) -> Path:
    """Where the parser state of a learn ``output`` goes: ``s.txt`` -> ``s.drain3.json``."""
    p = Path(output)
    return p.with_name(f"{p.stem}.drain3.json")


class LearnWriter:
    """Appends sessions to ``output``; adds the parser state beside it (``parser_state_path``) to
    ``persister``, whose saves write it (the caller saves once more after ``close``)."""

    def __init__(self, output: str | Path, persister: ParserPersister) -> None:
        self.output = Path(output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        persister.add(FilePersistence(parser_state_path(self.output)))
        self._file: IO[str] | None = open(self.output, "a", encoding="utf-8")  # noqa: SIM115
        self._flushed = time.monotonic()
        self.sessions = 0

    def write(self, keys: Sequence[str]) -> None:
        """Append one session (keys must contain no whitespace; Drain3 ids never do)."""
        assert self._file is not None, "LearnWriter is closed"
        self._file.write(" ".join(keys) + "\n")
        self.sessions += 1
        if time.monotonic() - self._flushed >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Push written lines to the file."""
        if self._file is not None:
            self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        """Flush and close the output; idempotent."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
