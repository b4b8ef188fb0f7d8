"""The generated parts of ``docs/sidecar-config.md``, written from the code that defines them.

    python -m otel_logbert.config_docs            # rewrite the generated parts in place
    python -m otel_logbert.config_docs --check    # exit 1 (naming the stale parts) if they differ

Three parts, each between ``<!-- BEGIN GENERATED <name> ... -->`` and ``<!-- END GENERATED <name> -->``
lines (the text between them is replaced; everything else in the file is hand-written):

- ``config-yaml``: every key at its default, as YAML, from the dataclasses of ``otel_logbert.config``
  (a key's ``example`` metadata stands in where the default is null and a value is needed);
- ``config-keys``: the ``key | type | default | description`` table, from the same dataclasses
  (type from the annotation and the key's ``Check``, description from the field's ``doc`` metadata);
- ``metrics``: the metric table, from ``otel_logbert.otlp.instruments.METRICS``.

``tests/unit/test_config_docs.py`` fails when the file is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from otel_logbert.config import HostPort, NonEmpty, OneOf, Section, SidecarConfig
from otel_logbert.otlp.instruments import METRICS

DOC = Path(__file__).resolve().parent.parent / "docs" / "sidecar-config.md"
COMMAND = "python -m otel_logbert.config_docs"


# --- the parts --------------------------------------------------------------------------------------


def _leaves(cls: type, path: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted path, field, type) of every leaf key under section ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, dataclasses.Field[Any], Any]] = []
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if _is_section(hints[f.name]):
            out.extend(_leaves(hints[f.name], where))
        else:
            out.append((where, f, hints[f.name]))
    return out


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _value(value: Any) -> str:
    """A value as YAML flow text (JSON is valid YAML: strings quoted, null, true, [], {})."""
    return json.dumps(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        (inner,) = [o for o in typing.get_args(tp) if o is not type(None)]
        return f"{_type_name(inner)} or null"
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_type_name(item)}"
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return f"mapping {_type_name(key_tp)} -> {_type_name(value_tp)}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]


def _key_type(f: dataclasses.Field[Any], tp: Any) -> str:
    """The annotation's type, refined by the key's check (``grpc | http``, ``number > 0``, ...)."""
    text = _type_name(tp)
    check = f.metadata.get("check")
    if check is None:
        return text
    nullable = text.endswith(" or null")
    base = text.removesuffix(" or null")
    if isinstance(check, OneOf):
        base = " \\| ".join(f"`{c}`" for c in check.choices)
    elif isinstance(check, HostPort):
        base = "host:port"
    elif isinstance(check, NonEmpty):
        base = f"non-empty {base}"
    else:
        base = f"{base} {check}"
    return f"{base} or null" if nullable else base


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def key_table() -> str:
    """``key | type | default | description``, one row per leaf key of ``SidecarConfig``."""
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for path, f, tp in _leaves(SidecarConfig):
        doc = f.metadata.get("doc", "")
        rows.append(f"| `{path}` | {_key_type(f, tp)} | `{_value(_default(f))}` | {_cell(doc)} |")
    return "\n".join(rows)


def yaml_skeleton() -> str:
    """Every section and key at its default, as a YAML block that ``load_config`` accepts."""
    lines = ["```yaml"]
    _yaml_section(SidecarConfig, 0, lines)
    lines.append("```")
    return "\n".join(lines)


def _yaml_section(cls: type, depth: int, lines: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    indent = "  " * depth
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if not _is_section(tp):
            example = f.metadata.get("example")
            value = _default(f) if example is None else example
            note = "   # an example (default: null)" if example is not None else ""
            lines.append(f"{indent}{f.name}: {_value(value)}{note}")
            continue
        children = [(c, typing.get_type_hints(tp)[c.name]) for c in dataclasses.fields(tp)]
        comment = f"   # {f.metadata['doc']}" if f.metadata.get("doc") else ""
        if depth > 0 and not any(_is_section(t) for _, t in children):
            flow = ", ".join(f"{c.name}: {_value(_default(c))}" for c, _ in children)
            lines.append(f"{indent}{f.name}: {{{flow}}}{comment}")
        else:
            lines.append(f"{indent}{f.name}:{comment}")
            _yaml_section(tp, depth + 1, lines)


def metric_table() -> str:
    """One row per entry of ``METRICS``."""
    rows = [
        "| metric (OTLP) | Prometheus | kind | unit | attributes | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in METRICS:
        attributes = ", ".join(f"`{a}`" for a in m.attributes) or "-"
        unit = f"`{m.unit}`" if m.unit else "-"
        rows.append(
            f"| `{m.name}` | `{m.prometheus_name}` | {m.kind} | {unit} | {attributes} | {_cell(m.description)} |"
        )
    return "\n".join(rows)


PARTS: dict[str, Callable[[], str]] = {
    "config-yaml": yaml_skeleton,
    "config-keys": key_table,
    "metrics": metric_table,
}


# --- writing ----------------------------------------------------------------------------------------


class StaleDocError(Exception):
    """A generated part is missing its markers (the message names the part and the file)."""


def render(text: str, source: object = DOC) -> str:
    """``text`` with every generated part replaced by its current rendering. Raises ``StaleDocError``
    when a part's BEGIN/END markers are missing."""
    for name, build in PARTS.items():
        pattern = re.compile(
            rf"<!-- BEGIN GENERATED {re.escape(name)}\b[^\n]*-->\n(.*?)<!-- END GENERATED {re.escape(name)} -->",
            re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise StaleDocError(f"{source}: no '<!-- BEGIN GENERATED {name} -->' ... END markers")
        text = text[: match.start(1)] + build() + "\n" + text[match.end(1) :]
    return text


def stale_parts(text: str) -> list[str]:
    """Names of the generated parts whose text differs from their current rendering."""
    fresh = render(text)
    return [name for name in PARTS if _part(text, name) != _part(fresh, name)]


def _part(text: str, name: str) -> str:
    return text.split(f"<!-- BEGIN GENERATED {name}", 1)[1].split(f"<!-- END GENERATED {name} -->", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale; write nothing")
    parser.add_argument("doc", nargs="?", type=Path, default=DOC, help=f"the file (default: {DOC})")
    args = parser.parse_args(argv)
    try:
        text = args.doc.read_text(encoding="utf-8")
        if args.check:
            stale = stale_parts(text)
            if stale:
                print(f"{args.doc}: stale generated parts {', '.join(stale)}; run {COMMAND}", file=sys.stderr)
                return 1
            return 0
        fresh = render(text, args.doc)
    except (OSError, StaleDocError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if fresh != text:
        args.doc.write_text(fresh, encoding="utf-8")
        print(f"{args.doc}: updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
