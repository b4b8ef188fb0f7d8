"""Per-request bounds a decoded OTLP logs request must respect before the sidecar takes it.

The byte limits (``max_message_bytes``, ``max_body_bytes``) do not bound what a request costs once
decoded: 4 MB of protobuf can hold two million empty log records, each of which becomes a Python
object, a session entry and a forwarded record. ``check_request`` refuses a request with more than
``max_records`` records or a record, resource or scope with more than ``max_attributes`` attributes,
in one pass that only counts. Receivers answer ``RESOURCE_EXHAUSTED`` without a retry hint / HTTP 413
(the Collector does not retry either: the same request would be refused again).

Attribute sizes: a key longer than ``max_key_bytes`` (UTF-8) or a value larger than
``max_value_bytes`` (a string's UTF-8 bytes, a bytes value's length; an array or kvlist value: its
whole encoded size, nested keys and values included) on a record, resource or scope is refused as
invalid (``AttributeTooLarge``: gRPC ``INVALID_ARGUMENT`` / HTTP 400), the message naming where
(``resource_logs[i].scope_logs[j].log_records[k]``) and the key. Fast path: only a resource, scope or
record whose encoded size exceeds the smaller bound can hold such an attribute, so only those are
looked into (``ByteSize`` is computed in C); a request of small records costs one call per resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

KEY_SHOWN_CHARS = 64
"""How much of an offending key a refusal quotes."""


class LimitExceeded(ValueError):
    """The request exceeds a per-request bound; the one-line message names the bound."""


class AttributeTooLarge(LimitExceeded):
    """An attribute key or value exceeds its size bound: the request is invalid (400 / INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class RequestLimits:
    """``max_records``: log records per request; ``max_attributes``: attributes per record, per resource
    and per scope; ``max_key_bytes`` / ``max_value_bytes``: an attribute's key / value size. 0 disables
    a bound."""

    max_records: int = 0
    max_attributes: int = 0
    max_key_bytes: int = 0
    max_value_bytes: int = 0

    @property
    def _inspect_over(self) -> int:
        """The smaller size bound (0: none): a part encoded in fewer bytes cannot exceed either."""
        sized = [b for b in (self.max_key_bytes, self.max_value_bytes) if b]
        return min(sized) if sized else 0

    def check(self, request: Message) -> int:
        """The request's record count. Raises ``AttributeTooLarge`` or ``LimitExceeded``."""
        count = 0
        max_attributes = self.max_attributes
        inspect_over = self._inspect_over
        for i, rl in enumerate(request.resource_logs):
            if max_attributes and len(rl.resource.attributes) > max_attributes:
                raise LimitExceeded(
                    f"a resource has {len(rl.resource.attributes)} attributes, more than the "
                    f"{max_attributes} allowed (receivers.max_attributes_per_record)"
                )
            if inspect_over:
                self._check_sizes(rl.resource.attributes, f"resource_logs[{i}].resource")
            for j, sl in enumerate(rl.scope_logs):
                if max_attributes and len(sl.scope.attributes) > max_attributes:
                    raise LimitExceeded(
                        f"a scope has {len(sl.scope.attributes)} attributes, more than the "
                        f"{max_attributes} allowed (receivers.max_attributes_per_record)"
                    )
                records = sl.log_records
                count += len(records)
                if max_attributes:
                    widest = max((len(r.attributes) for r in records), default=0)
                    if widest > max_attributes:
                        raise LimitExceeded(
                            f"a log record has {widest} attributes, more than the {max_attributes} "
                            "allowed (receivers.max_attributes_per_record)"
                        )
                # Each attribute and each record is measured once (``ByteSize`` encodes): gates on the
                # resource or the scope as a whole would encode every record again for nothing.
                if inspect_over:
                    where = f"resource_logs[{i}].scope_logs[{j}]"
                    self._check_sizes(sl.scope.attributes, f"{where}.scope")
                    for k, record in enumerate(records):
                        if record.ByteSize() > inspect_over:
                            self._check_sizes(record.attributes, f"{where}.log_records[{k}]")
        if self.max_records and count > self.max_records:
            raise LimitExceeded(
                f"request holds {count} log records, more than the {self.max_records} allowed "
                "(receivers.max_records_per_request); send smaller batches"
            )
        return count

    def _check_sizes(self, attributes: Sequence[Any], where: str) -> None:
        """Raise ``AttributeTooLarge`` for the first attribute of ``attributes`` over a size bound."""
        inspect_over = self._inspect_over
        for kv in attributes:
            if kv.ByteSize() <= inspect_over:
                continue
            key_bytes = _size(kv.key)
            if self.max_key_bytes and key_bytes > self.max_key_bytes:
                raise AttributeTooLarge(
                    f"{where}: attribute key {_shown(kv.key)} is {key_bytes} bytes, more than the "
                    f"{self.max_key_bytes} allowed (receivers.max_attribute_key_bytes)"
                )
            value_bytes = _value_bytes(kv.value)
            if self.max_value_bytes and value_bytes > self.max_value_bytes:
                raise AttributeTooLarge(
                    f"{where}: value of attribute {_shown(kv.key)} is {value_bytes} bytes, more than the "
                    f"{self.max_value_bytes} allowed (receivers.max_attribute_value_bytes)"
                )


def _value_bytes(value: Any) -> int:
    """An AnyValue's size: UTF-8 bytes of a string, length of bytes, encoded size of anything else."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _size(value.string_value)
    if kind == "bytes_value":
        return len(value.bytes_value)
    return value.ByteSize()


def _size(text: str | bytes) -> int:
    """UTF-8 bytes of ``text`` (the receivers' lenient messages hold strings as bytes already)."""
    return len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))


def _shown(key: str | bytes) -> str:
    """``key`` quoted for a message, cut to ``KEY_SHOWN_CHARS`` characters."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if len(text) <= KEY_SHOWN_CHARS:
        return repr(text)
    return repr(text[:KEY_SHOWN_CHARS]) + f"... ({len(text)} characters)"
