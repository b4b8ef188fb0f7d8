"""The text a record is parsed from (``parsing.field``): its body, an attribute, or a key of a
kvlist body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_logbert.otlp.codec import attribute, render_value


def field_reader(field: str) -> Callable[[Any], bytes | str]:
    """The function that gives the text to parse of a lenient ``LogRecord`` (``parsing.field``).

    String bodies are returned as raw bytes (the parser decodes them; the parse cache keys on them);
    other values as their stable rendering (``codec.render_value``). A configured attribute or kvlist
    key that is absent falls back to the body.
    """

    def body(rec: Any) -> bytes | str:
        value = rec.body
        if value.WhichOneof("value") == "string_value":
            return value.string_value
        return render_value(value)

    if field == "body":
        return body
    where, _, name = field.partition(".")
    key = name.encode()

    def one(value: Any) -> bytes | str:
        return value.string_value if value.WhichOneof("value") == "string_value" else render_value(value)

    if where == "attributes":

        def from_attribute(rec: Any) -> bytes | str:
            value = attribute(rec.attributes, key)
            return body(rec) if value is None else one(value)

        return from_attribute

    def from_kvlist(rec: Any) -> bytes | str:
        if rec.body.WhichOneof("value") == "kvlist_value":
            value = attribute(rec.body.kvlist_value.values, key)
            if value is not None:
                return one(value)
        return body(rec)

    return from_kvlist
