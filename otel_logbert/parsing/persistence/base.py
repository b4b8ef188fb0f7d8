"""``PersistenceHandler``: the interface of a parser-state backend (Drain3's, with types and contracts)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class PersistenceHandler(ABC):
    """Stores one blob: the serialised state of one parser.

    Implementations are called from a worker thread (``ParserPersister`` runs them off the event
    loop), never two calls at once for one handler.
    """

    @abstractmethod
    def save_state(self, state: bytes) -> None:
        """Replace the stored state with ``state``, durably: once this returns, a crash keeps it, and a
        reader never sees a half-written state. Raises ``OSError`` (or the backend's error) on failure,
        leaving the previous state in place."""

    @abstractmethod
    def load_state(self) -> bytes | None:
        """The stored state, or None when nothing was stored yet. Raises ``OSError`` when the backend
        cannot be read."""

    @abstractmethod
    def describe(self) -> str:
        """Where the state lives, for messages (e.g. the file path)."""
