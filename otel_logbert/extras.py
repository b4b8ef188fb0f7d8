"""Optional dependency groups (pyproject extras) and the one-line error when one is missing.

A plain ``pip install otel-logbert`` is enough for ``serve`` and ``learn`` (ONNX Runtime, no torch, no
matplotlib). Commands that need more call ``require(extra, command)`` before any work; the CLI also
turns a ``ModuleNotFoundError`` of an extra's module into the same message (``missing_extra``), so a
lazy import deep inside a command cannot end in a traceback.
"""

from __future__ import annotations

import importlib.util

from otel_logbert.errors import UserError

# extra -> the top-level modules it provides (the same groups as pyproject's optional-dependencies).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch", "onnx", "onnxscript", "safetensors", "sklearn"),
    "plot": ("matplotlib",),
}
_EXTRA_OF_MODULE = {module: extra for extra, modules in EXTRA_MODULES.items() for module in modules}


class MissingExtraError(UserError):
    """A command needs an optional dependency group that is not installed."""


def _message(what: str, missing: dict[str, str]) -> str:
    """``missing``: extra -> one of its modules that is not installed."""
    names = " and ".join(f"'{e}'" for e in missing)
    modules = ", ".join(missing.values())
    noun = "extra" if len(missing) == 1 else "extras"
    return (f"{what} needs the {names} {noun} ({modules} not installed): "
            f"pip install 'otel-logbert[{','.join(missing)}]'")


def require(extras: str | tuple[str, ...], what: str) -> None:
    """Raise ``MissingExtraError`` naming every extra of ``extras`` with a module that cannot be imported.

    ``what`` names the feature in the message (``"train"``, ``"eval --plot"``). Only looks the modules
    up (``importlib.util.find_spec``); nothing is imported.
    """
    missing: dict[str, str] = {}
    for extra in (extras,) if isinstance(extras, str) else extras:
        absent = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
        if absent:
            missing[extra] = absent[0]
    if missing:
        raise MissingExtraError(_message(what, missing))


def missing_extra(exc: ModuleNotFoundError, what: str) -> MissingExtraError | None:
    """The ``MissingExtraError`` for ``exc`` when the missing module belongs to an extra, else None."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF_MODULE.get(top)
    return MissingExtraError(_message(what, {extra: top})) if extra else None
