"""Raw log lines -> window sessions of log keys, for systems without a session id (BGL, Thunderbird).

A window spec is ``SIZE`` or ``SIZE/STEP``:

* time windows: ``300s`` or ``300s/60s``. Window ``i`` covers ``[i*STEP, i*STEP + SIZE)`` seconds of the
  line's timestamp, as the sidecar's ``sessions.key: window`` (``size_s`` / ``slide_s``) places records;
  the timestamp is the first group of ``timestamp_regex`` (unix seconds) or a preset name (``bgl``).
* line windows: ``100`` or ``100/20``. Window ``i`` covers lines ``[i*STEP, i*STEP + SIZE)``.

Tumbling when ``STEP == SIZE`` (the default), sliding when ``STEP < SIZE``: a line then joins every
window that covers it. STEP may not exceed SIZE (a gap would lose lines). Windows are returned in
order of their start, each with the indices of its lines (to label windows when measuring).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from otel_logbert.parsing.raw_sessions import ContentExtractor

# BGL: "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.363779 R02-M1-N0-C:J12-U11 RAS
# KERNEL INFO <message>": the first field is the alert label ("-" = no alert), the second unix seconds.
# The content preset (``bgl``) is in ``parsing.raw_sessions``.
BGL_TIMESTAMP_REGEX = r"^\S+ (\d+) "
TIMESTAMP_REGEX_PRESETS: dict[str, str] = {"bgl": BGL_TIMESTAMP_REGEX}


@dataclass(frozen=True)
class WindowSpec:
    size: float
    step: float
    seconds: bool  # time windows (True) or line windows (False)

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``'300s'``, ``'300s/60s'``, ``'100'``, ``'100/20'``. Raises ``ValueError`` naming the problem."""
        size_text, _, step_text = text.strip().partition("/")
        step_text = step_text or size_text
        units = {t.endswith("s") for t in (size_text, step_text)}
        if len(units) != 1:
            raise ValueError(f"window {text!r}: size and step must both be seconds ('300s/60s') or lines ('100/20')")
        seconds = units.pop()
        try:
            size, step = (float(t[:-1]) if seconds else int(t) for t in (size_text, step_text))
        except ValueError:
            raise ValueError(f"window {text!r}: expected SIZE[/STEP], e.g. 300s/60s or 100/20") from None
        if size <= 0 or step <= 0:
            raise ValueError(f"window {text!r}: size and step must be > 0")
        if step > size:
            raise ValueError(f"window {text!r}: step must be <= size (a gap between windows loses lines)")
        return cls(size, step, seconds)

    def windows_of(self, position: float) -> range:
        """Indices of the windows covering ``position`` (a line number or a time in seconds)."""
        last = math.floor(position / self.step)
        first = math.floor((position - self.size) / self.step) + 1
        return range(max(first, 0), last + 1)


@dataclass
class Window:
    start: float  # seconds or line number
    keys: list[str]
    lines: list[int]  # indices (0-based) of the input lines in this window


def timestamp_reader(timestamp_regex: str) -> Callable[[str, int], float]:
    """Line -> unix seconds from the first group of ``timestamp_regex`` (or a preset name)."""
    pattern = TIMESTAMP_REGEX_PRESETS.get(timestamp_regex, timestamp_regex)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid timestamp regex {timestamp_regex!r}: {exc}") from None

    def read(line: str, number: int) -> float:
        match = regex.search(line)
        if match is None:
            raise ValueError(f"line {number}: no timestamp (timestamp regex {timestamp_regex!r})")
        try:
            return float(match.group(1) if regex.groups else match.group(0))
        except ValueError:
            raise ValueError(f"line {number}: timestamp {match.group(0)!r} is not unix seconds") from None

    return read


def window_sessions(
    lines: Iterable[str],
    spec: WindowSpec,
    parse: Callable[[str], str],
    content_regex: str | None = None,
    timestamp_regex: str | None = None,
) -> list[Window]:
    """Parse each non-empty line's message once with ``parse`` (text -> key) and add its key to every
    window covering it. Time windows need ``timestamp_regex``. Raises ``ValueError`` naming the line."""
    if spec.seconds and not timestamp_regex:
        raise ValueError("time windows need a timestamp regex (e.g. the 'bgl' preset)")
    extract = ContentExtractor(content_regex) if content_regex else None
    when = timestamp_reader(timestamp_regex) if spec.seconds and timestamp_regex else None
    windows: dict[int, Window] = {}
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        position = when(line, index + 1) if when else float(index)
        key = parse(extract(line) if extract else line)
        for w in spec.windows_of(position):
            window = windows.setdefault(w, Window(start=w * spec.step, keys=[], lines=[]))
            window.keys.append(key)
            window.lines.append(index)
    return [windows[w] for w in sorted(windows)]
