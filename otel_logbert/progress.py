"""Progress bars for the command line: live on a terminal, a few plain lines in a log.

On a terminal ``progress_bar`` is an ordinary tqdm bar. When stderr is not a terminal (``make demo >
log``, CI, a container) the same bar prints its state as one plain line at most every
``LOG_INTERVAL_S`` seconds (and at the end) instead of thousands of carriage-return updates.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 5.0


class _Lines:
    """A file for tqdm that turns each carriage-return redraw into one line of its own."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip("\n")
        if line.strip():
            self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, file: IO[str] | None = None) -> tqdm:
    """A tqdm bar on ``file`` (default stderr); ``enabled=False`` shows nothing."""
    out = file if file is not None else sys.stderr
    options: dict[str, Any] = {"total": total, "desc": desc, "unit": unit, "disable": not enabled}
    if out.isatty():
        return tqdm(file=out, dynamic_ncols=True, **options)
    return tqdm(file=_Lines(out), ncols=100, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, **options)
