"""``ParserPersister``: the one persister of a ``LogParser``, writing its state when it changed.

Change is the parser's ``revision`` (a cluster created or a template generalised: what decides keys).
Cluster sizes alone do not count; they are saved with the next change. A handler is written once
after it is added (so a new state file or learn-mode state appears even when nothing was learned)
and then whenever the revision moved since its last write.

``save_async`` is what an event loop calls: the state is copied on the loop (``LogParser.to_json``
builds new lists and dicts, so the copy is consistent and later parsing cannot change it); encoding
it to JSON and the handlers' writes (fsync) run in a worker thread. A write of an older copy never
replaces a newer one. ``save`` does the same synchronously, for callers without a loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.persistence.base import PersistenceHandler


def load_parser(handler: PersistenceHandler) -> LogParser | None:
    """The parser stored in ``handler``, or None when it holds nothing. Raises ``OSError`` when it
    cannot be read and ``ValueError`` when the state is not a parser state."""
    state = handler.load_state()
    if state is None:
        return None
    try:
        data = json.loads(state)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return LogParser.from_json(data)


@dataclass
class _Target:
    handler: PersistenceHandler
    written: int | None = None  # parser revision last written here; None: never


@dataclass(frozen=True)
class _Snapshot:
    revision: int
    state: dict[str, Any]
    targets: tuple[_Target, ...]


class ParserPersister:
    """Saves ``parser``'s state to every handler added, when it changed (see the module docstring).

    The parser is read only in ``save`` / ``save_async`` / ``changed``, on the caller's thread (the
    one that owns the parser); handlers run under a lock, one write at a time.
    """

    def __init__(self, parser: LogParser, handlers: tuple[PersistenceHandler, ...] = ()) -> None:
        self.parser = parser
        self._targets: list[_Target] = [_Target(h) for h in handlers]
        self._write_lock = threading.Lock()

    def add(self, handler: PersistenceHandler) -> None:
        """Also keep the state in ``handler`` (written at the next save)."""
        self._targets.append(_Target(handler))

    @property
    def handlers(self) -> list[PersistenceHandler]:
        return [t.handler for t in self._targets]

    @property
    def changed(self) -> bool:
        """True when some handler does not hold the parser's current revision."""
        revision = self.parser.revision
        return any(t.written != revision for t in self._targets)

    def save(self) -> bool:
        """Write the state now where it changed (blocking). Returns whether anything was written.
        Raises ``OSError`` (or a backend's error) from the first failing handler; the others are
        still written."""
        snapshot = self._snapshot()
        return snapshot is not None and self._write(snapshot)

    async def save_async(self) -> bool:
        """``save`` with the encoding and writing in a worker thread; call it on the parser's loop."""
        snapshot = self._snapshot()
        return snapshot is not None and await asyncio.to_thread(self._write, snapshot)

    def _snapshot(self) -> _Snapshot | None:
        revision = self.parser.revision
        stale = tuple(t for t in self._targets if t.written != revision)
        if not stale:
            return None
        return _Snapshot(revision, self.parser.to_json(), stale)

    def _write(self, snapshot: _Snapshot) -> bool:
        data = json.dumps(snapshot.state).encode("utf-8")
        wrote, failure = False, None
        with self._write_lock:
            for target in snapshot.targets:
                if target.written is not None and target.written >= snapshot.revision:
                    continue  # a newer copy got there first
                try:
                    target.handler.save_state(data)
                except Exception as exc:
                    failure = failure or exc
                    continue
                target.written = snapshot.revision
                wrote = True
        if failure is not None:
            raise failure
        return wrote
