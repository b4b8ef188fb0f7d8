"""Reading session files and turning sessions into padded training batches.

Accepted session files (format detected from the first non-empty line):

* DeepLog: one session per line, space-separated integer event ids (``5 5 22 11 9``).
* CSV: ``id,sequence`` per line, with or without a header (``blk_1,5 5 22 11 9``).
* Raw log lines plus a session-id regex (e.g. HDFS ``blk_-?\\d+``): parsed with Drain3; keys are
  cluster ids and the parser state travels in the bundle.
* Raw log lines plus a window spec (``300s/60s`` time windows, ``100/20`` line windows; see
  ``parsing.windows``): the same, one session per window.

A DeepLog file written by the sidecar's learn mode has its Drain3 state beside it
(``<stem>.drain3.json``); it is read too, so the bundle can parse raw records at serve time.

Every read error names the file and line (``InputError``).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from otel_logbert.errors import InputError, UserError
from otel_logbert.parsing.vocabulary import PAD_ID, Vocabulary
from otel_logbert.safe_files import read_json
from otel_logbert.scoring.batching import chunk


@dataclass
class SessionFile:
    """Sessions read from one file: parallel lists of session ids and key sequences."""

    path: Path
    ids: list[str]
    sessions: list[list[str]]
    drain_state: dict[str, Any] | None = field(default=None)


def _keys(text: str, path: Path, line: int) -> list[str]:
    keys = text.split()
    if not keys:
        raise InputError(path, "empty session", line)
    for key in keys:
        if not key.lstrip("-").isdigit():
            raise InputError(path, f"event id {key!r} is not an integer", line)
    return keys


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a session file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte offset {exc.start})") from None


def read_sessions(path: str | Path, session_regex: str | None = None, masking: str = "hdfs",
                  window: RawWindows | None = None) -> SessionFile:
    """Read a session file (see module docstring). Raises ``InputError`` naming file and line."""
    path = Path(path)
    text = _read_text(path)
    if window is not None:
        return _read_raw_windows(path, text, window, masking)
    if session_regex is not None:
        return _read_raw_log(path, text, session_regex, masking)
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise InputError(path, "empty file: no sessions")
    if "," in lines[first]:
        return _read_csv(path, text)
    ids, sessions = [], []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            sessions.append(_keys(line, path, number))
            ids.append(f"{path.name}:{number}")
    return SessionFile(path, ids, sessions, drain_state=_learned_parser_state(path))


def _learned_parser_state(path: Path) -> dict[str, Any] | None:
    """The Drain3 state the learn mode saved beside ``path``, if there is one."""
    from otel_logbert.sessions.learn import parser_state_path

    state_path = parser_state_path(path)
    try:  # beside ``path``, regular, bounded, JSON (``safe_files``)
        state = read_json(state_path.parent, state_path.name, error=UserError)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(state_path, f"cannot read the parser state ({exc.strerror})") from None
    if not isinstance(state, dict):
        raise InputError(state_path, "parser state is not a JSON object")
    return state


# No limit on the size of a CSV field: a session of 100,000 keys is a ~600 KB field (the csv module's
# default limit is 128 KiB). The largest value the platform's C long takes.
CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(path: Path, text: str) -> SessionFile:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    ids, sessions = [], []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            number = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise InputError(path, f"expected 2 CSV fields (id,sequence), found {len(row)}", number)
            if not ids and not sessions and not row[1].replace(" ", "").lstrip("-").isdigit():
                continue  # header line
            sessions.append(_keys(row[1], path, number))
            ids.append(row[0].strip())
    except csv.Error as exc:
        raise InputError(path, f"invalid CSV ({exc})", reader.line_num) from None
    if not sessions:
        raise InputError(path, "no sessions found (only a header?)")
    return SessionFile(path, ids, sessions)


def _read_raw_log(path: Path, text: str, session_regex: str, masking: str) -> SessionFile:
    from otel_logbert.parsing.drain import LogParser
    from otel_logbert.parsing.raw_sessions import sessions_from_raw_lines

    parser = LogParser(masking=masking)
    try:
        grouped = sessions_from_raw_lines(text.splitlines(), session_regex, parser)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    if not grouped:
        raise InputError(path, f"no line matches the session regex {session_regex!r}")
    return SessionFile(path, [g[0] for g in grouped], [g[1] for g in grouped], drain_state=parser.to_json())


@dataclass(frozen=True)
class RawWindows:
    """How raw lines become window sessions: ``spec`` (``300s/60s``, ``100/20``), the message's content
    regex (or preset, e.g. ``bgl``), and for time windows the timestamp regex (or preset)."""

    spec: str
    content_regex: str | None = None
    timestamp_regex: str | None = None


def _read_raw_windows(path: Path, text: str, window: RawWindows, masking: str) -> SessionFile:
    from otel_logbert.parsing.drain import LogParser
    from otel_logbert.parsing.windows import WindowSpec, window_sessions

    parser = LogParser(masking=masking)
    try:
        spec = WindowSpec.parse(window.spec)
        windows = window_sessions(text.splitlines(), spec, lambda m: parser.parse(m).key,
                                  window.content_regex, window.timestamp_regex)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    if not windows:
        raise InputError(path, "no log lines: no windows")
    unit = "s" if spec.seconds else ""
    return SessionFile(path, [f"window@{w.start:.10g}{unit}" for w in windows], [w.keys for w in windows],
                       drain_state=parser.to_json())


def split_normal(
    sessions: Sequence[list[str]], val_fraction: float, seed: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Deterministic random split of normal sessions into (train, validation)."""
    order = list(range(len(sessions)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(sessions) * val_fraction)) if len(sessions) > 1 else 0
    val = [sessions[i] for i in order[:n_val]]
    train = [sessions[i] for i in order[n_val:]]
    return train, val


def to_chunks(sessions: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int) -> list[list[int]]:
    """Encode sessions and split long ones into ``max_len`` chunks (each chunk a training sample)."""
    return [list(c) for s in sessions for c in chunk(vocab.encode(s), max_len)]


def pad(chunks: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(c) for c in chunks)
    tokens = torch.full((len(chunks), width), PAD_ID, dtype=torch.int64)
    for row, c in enumerate(chunks):
        tokens[row, : len(c)] = torch.tensor(c, dtype=torch.int64)
    return tokens


def batches(
    chunks: Sequence[Sequence[int]], batch_size: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Padded batches (B, L); shuffled with ``generator`` when given, else in order."""
    if generator is not None:
        order = torch.randperm(len(chunks), generator=generator).tolist()
    else:
        order = list(range(len(chunks)))
    for start in range(0, len(order), batch_size):
        yield pad([chunks[i] for i in order[start : start + batch_size]])
