"""Reading files that may come from an untrusted place: model bundles and parser / learn-mode state.

A bundle directory is copied from somewhere (an image, a volume, a download); a state file lives on a
writable volume. Neither is trusted to be well formed, so every read goes through this module:

- containment: a file must resolve (symlinks followed) inside its directory. A symlink that stays
  inside is fine (Kubernetes ConfigMap and Secret volumes are made of them); one that leaves it (to
  ``/etc/passwd``, to another volume) and a name with ``..`` that escapes it are refused;
- a regular file only: a FIFO, a device (``/dev/zero``) or a directory is refused before it is read;
- bounded size: ``MAX_JSON_BYTES`` for JSON parts, ``MAX_MODEL_BYTES`` for ``model.onnx`` and
  ``weights.safetensors``; checked on the open file and again while reading (a growing file stops at
  the bound);
- JSON only: JSON is parsed with the standard library's ``json`` (deeply nested input is refused, never
  a ``RecursionError``); models are ONNX and safetensors. Nothing anywhere in the package unpickles.

Each refusal is one line, ``<path>: <what was wrong>``, raised as the caller's error type (``BundleError``
by default).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otel_logbert.errors import BundleError

MAX_JSON_BYTES = 64 * 1024 * 1024
"""The largest JSON file read from a bundle or a state file (bytes)."""
MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024
"""The largest ``model.onnx`` / ``weights.safetensors`` accepted (bytes)."""

ErrorFactory = Callable[[str], Exception]


def resolve_inside(root: str | os.PathLike[str], name: str | os.PathLike[str],
                   error: ErrorFactory = BundleError) -> Path:
    """The real path of ``root / name`` (symlinks followed). Raises ``error`` when it is not inside
    ``root``'s real path: a ``..`` or absolute ``name`` that escapes, or a symlink that leads out."""
    base = Path(os.path.realpath(root))
    path = Path(root) / name
    real = Path(os.path.realpath(path))
    if real != base and not real.is_relative_to(base):
        what = "symlink" if _has_link(Path(root), Path(name)) else "path"
        raise error(f"{path}: {what} resolves to {real}, outside {base}; refused")
    return real


def checked_file(root: str | os.PathLike[str], name: str | os.PathLike[str], *, limit: int,
                 error: ErrorFactory = BundleError) -> Path:
    """``resolve_inside`` plus: a regular file of at most ``limit`` bytes. Returns the real path (for
    readers that open by path, e.g. ONNX Runtime). Raises ``FileNotFoundError`` when it does not exist."""
    real = resolve_inside(root, name, error)
    shown = Path(root) / name
    info = os.stat(real)
    _check_stat(shown, info, limit, error)
    return real


def read_bytes(root: str | os.PathLike[str], name: str | os.PathLike[str], *, limit: int = MAX_JSON_BYTES,
               error: ErrorFactory = BundleError) -> bytes:
    """The bytes of ``root / name`` after the checks of ``checked_file``, never more than ``limit``.
    Raises ``FileNotFoundError`` when it does not exist, ``error`` when refused."""
    real = resolve_inside(root, name, error)
    shown = Path(root) / name
    # O_NOFOLLOW: the checked path cannot be swapped for a symlink before the open; O_NONBLOCK: a FIFO
    # is refused by fstat instead of blocking the open.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise error(f"{shown}: cannot open ({exc.strerror})") from None
    try:
        _check_stat(shown, os.fstat(fd), limit, error)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{shown}: larger than {limit} bytes (grew while read); refused")
    return data


def read_json(root: str | os.PathLike[str], name: str | os.PathLike[str], *, limit: int = MAX_JSON_BYTES,
              error: ErrorFactory = BundleError) -> Any:
    """The JSON value in ``root / name`` (checks of ``read_bytes``). Raises ``FileNotFoundError`` when
    missing, ``error`` when refused, not UTF-8, not JSON or nested too deeply."""
    data = read_bytes(root, name, limit=limit, error=error)
    shown = Path(root) / name
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{shown}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{shown}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{shown}: JSON nested too deeply") from None


def _check_stat(shown: Path, info: os.stat_result, limit: int, error: ErrorFactory) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{shown}: not a regular file; refused")
    if info.st_size > limit:
        raise error(f"{shown}: {info.st_size} bytes, larger than the limit of {limit}; refused")


def _has_link(root: Path, name: Path) -> bool:
    """Whether any component of ``root / name`` below ``root`` is a symlink (for the message only)."""
    path = root
    for part in name.parts:
        path = path / part
        if path.is_symlink():
            return True
    return False
