"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration, described in one line that names what was wrong and where."""


class InputError(UserError):
    """A data file that cannot be read: carries the file and, where known, the line number."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class BundleError(UserError):
    """A model bundle that is missing files, is corrupt or comes from an incompatible version."""
