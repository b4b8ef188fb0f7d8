"""``FilePersistence``: the parser state in one file, replaced atomically and fsynced."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from otel_logbert.parsing.persistence.base import PersistenceHandler
from otel_logbert.safe_files import read_bytes


class FilePersistence(PersistenceHandler):
    """The state in ``path``: written to a temporary file beside it, fsynced, then renamed over it
    (a reader sees the old file or the new one, never half). Missing parent folders are created."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save_state(self, state: bytes) -> None:
        target = self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_state(self) -> bytes | None:
        try:  # beside its directory, regular, bounded (``safe_files``)
            return read_bytes(self.path.parent, self.path.name, error=OSError)
        except FileNotFoundError:
            return None

    def describe(self) -> str:
        return str(self.path)
