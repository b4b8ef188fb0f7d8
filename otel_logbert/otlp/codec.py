"""OTLP logs wire formats: decoding requests, rendering values, building forwarded requests as bytes.

Decoding uses *lenient* copies of the opentelemetry-proto log messages in which every ``string``
field is declared ``bytes``. The wire encoding of the two is identical, so a record decodes without
UTF-8 validation and re-serialises byte-for-byte as it came in: a body holding invalid UTF-8 (which
the Collector's gogo-protobuf pdata lets through) is neither rejected nor altered. Text that the
sidecar itself reads (bodies for parsing, attribute values for session keys) is decoded with
``errors="replace"``. Everything the sidecar *writes* is valid UTF-8.

Forwarded requests are assembled from serialized pieces (records, resources, scopes) with the
protobuf wire format directly (``field_bytes``): a record never has to be re-parsed to be forwarded,
and the attributes the sidecar adds are appended as extra ``attributes`` entries (repeated fields may
be split anywhere in a message's encoding; parsers concatenate them).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
LOGS_EXPORT_METHOD = f"/{LOGS_SERVICE}/Export"

# Field numbers used when assembling requests by hand (see the .proto files of opentelemetry-proto).
REQUEST_RESOURCE_LOGS = 1  # ExportLogsServiceRequest.resource_logs
RESOURCE_LOGS_RESOURCE, RESOURCE_LOGS_SCOPE_LOGS, RESOURCE_LOGS_SCHEMA_URL = 1, 2, 3
SCOPE_LOGS_SCOPE, SCOPE_LOGS_LOG_RECORDS, SCOPE_LOGS_SCHEMA_URL = 1, 2, 3
LOG_RECORD_ATTRIBUTES = 6

# Deepest JSON nesting (objects and arrays) an OTLP/JSON request may have. A log body nested this deep
# holds about 38 levels of kvlist AnyValues (each takes four JSON levels, the request's envelope ten);
# binary protobuf stops at protobuf's own limit of 100 nested messages, about the same.
MAX_JSON_DEPTH = 160


class MalformedRequest(ValueError):
    """The request body cannot be decoded (bad protobuf, bad JSON, bad hex id). One-line message."""


def _lenient_classes() -> dict[str, type[Message]]:
    """Message classes for the logs protos with ``string`` fields re-declared as ``bytes``."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, logs_pb2, logs_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for message in proto.message_type:
            _strings_to_bytes(message)
        pool.Add(proto)
    names = {
        "ExportLogsServiceRequest": "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
        "LogRecord": "opentelemetry.proto.logs.v1.LogRecord",
        "AnyValue": "opentelemetry.proto.common.v1.AnyValue",
        "KeyValue": "opentelemetry.proto.common.v1.KeyValue",
    }
    return {
        short: message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
        for short, full in names.items()
    }


def _strings_to_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    for f in message.field:
        if f.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for nested in message.nested_type:
        _strings_to_bytes(nested)


_LENIENT = _lenient_classes()
LenientRequest = _LENIENT["ExportLogsServiceRequest"]
LenientLogRecord = _LENIENT["LogRecord"]
LenientAnyValue = _LENIENT["AnyValue"]
LenientKeyValue = _LENIENT["KeyValue"]


# --- decoding ---------------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> Message:
    """Binary ``ExportLogsServiceRequest`` -> lenient message. Raises ``MalformedRequest``."""
    try:
        return LenientRequest.FromString(body)
    except DecodeError as exc:
        raise MalformedRequest(f"malformed protobuf ExportLogsServiceRequest ({exc})") from None


def decode_json(body: bytes) -> Message:
    """OTLP/JSON ``ExportLogsServiceRequest`` -> lenient message. Raises ``MalformedRequest``.

    Per the OTLP JSON encoding: ``traceId``/``spanId`` are hex (not base64), enums may be ints, int64
    may be strings, field names are lowerCamelCase (snake_case accepted), unknown fields are ignored.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"malformed JSON ({exc})") from None
    except RecursionError:
        raise MalformedRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise MalformedRequest("malformed JSON: expected an object ExportLogsServiceRequest")
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise MalformedRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        _hex_ids_to_base64(data)
        strict = json_format.ParseDict(
            data, logs_service_pb2.ExportLogsServiceRequest(), ignore_unknown_fields=True
        )
    except MalformedRequest:
        raise
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MalformedRequest(f"invalid OTLP JSON ({message})") from None
    return LenientRequest.FromString(strict.SerializeToString())


def json_depth(data: Any, stop_at: int) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), counted without recursion; stops
    counting once ``stop_at`` is passed (returns ``stop_at + 1``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > stop_at:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """Rewrite every log record's hex ``traceId``/``spanId`` to the base64 protobuf JSON expects."""
    for rl in _list(data, "resourceLogs", "resource_logs"):
        for sl in _list(rl, "scopeLogs", "scope_logs"):
            for record in _list(sl, "logRecords", "log_records"):
                if not isinstance(record, dict):
                    continue
                for names, size in ((("traceId", "trace_id"), 16), (("spanId", "span_id"), 8)):
                    for name in names:
                        value = record.get(name)
                        if value is None or value == "":
                            continue
                        if not isinstance(value, str):
                            raise MalformedRequest(f"invalid OTLP JSON ({name} must be a hex string)")
                        try:
                            raw = bytes.fromhex(value)
                        except ValueError:
                            raise MalformedRequest(
                                f"invalid OTLP JSON ({name} {value[:40]!r} is not hex)"
                            ) from None
                        if len(raw) != size:
                            raise MalformedRequest(
                                f"invalid OTLP JSON ({name} must be {size} bytes, got {len(raw)})"
                            )
                        record[name] = base64.b64encode(raw).decode("ascii")


def _list(node: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    value = node.get(camel, node.get(snake))
    return value if isinstance(value, list) else []


def encode_json_response(response: Message) -> bytes:
    """An ``ExportLogsServiceResponse`` in OTLP/JSON (lowerCamelCase, int64 as strings)."""
    return json_format.MessageToJson(response, indent=None).encode("utf-8")


# --- reading values ---------------------------------------------------------------------------------


def text_of(value: bytes) -> str:
    """Lenient string field -> str (invalid UTF-8 becomes U+FFFD)."""
    return value.decode("utf-8", errors="replace")


def render_value(value: Message) -> str:
    """A stable text rendering of a lenient ``AnyValue`` for parsing and keys.

    Strings as themselves; numbers and bools as JSON; bytes as base64; arrays and kvlists as compact
    JSON with kvlist keys sorted (so the same structure always renders the same); empty -> ``""``.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return text_of(value.string_value)
    if kind is None:
        return ""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain(value: Message) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return text_of(value.string_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {text_of(kv.key): _plain(kv.value) for kv in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def attribute(attributes: Any, key: bytes) -> Message | None:
    """The lenient ``AnyValue`` under ``key`` in a repeated ``KeyValue`` field, or None."""
    for kv in attributes:
        if kv.key == key:
            return kv.value
    return None


def hex_id(raw: bytes) -> str:
    return binascii.hexlify(raw).decode("ascii")


# --- building requests ------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


_SCOPE_RECORD_TAG = varint((SCOPE_LOGS_LOG_RECORDS << 3) | 2)
SMALL_VARINTS = [varint(n) for n in range(1 << 14)]  # varint(n) for n < 16384 (two bytes), by lookup


def scope_logs_bytes(scope: bytes | None, schema_url: bytes, records: list[tuple[bytes, bytes]]) -> bytes:
    """A serialized ``ScopeLogs`` holding ``records``: each a serialized ``LogRecord`` given as two
    pieces written back to back (the record, then attribute entries appended to it)."""
    tag, small = _SCOPE_RECORD_TAG, SMALL_VARINTS
    parts = [field_bytes(SCOPE_LOGS_SCOPE, scope)] if scope is not None else []
    append = parts.append
    for data, suffix in records:
        size = len(data) + len(suffix)
        append(tag)
        append(small[size] if size < 16384 else varint(size))
        append(data)
        append(suffix)
    if schema_url:
        append(field_bytes(SCOPE_LOGS_SCHEMA_URL, schema_url))
    return b"".join(parts)


def resource_logs_bytes(resource: bytes | None, schema_url: bytes, scope_logs: list[bytes]) -> bytes:
    """A serialized ``ResourceLogs`` from serialized ``ScopeLogs``."""
    parts = [field_bytes(RESOURCE_LOGS_RESOURCE, resource)] if resource is not None else []
    parts.extend(field_bytes(RESOURCE_LOGS_SCOPE_LOGS, s) for s in scope_logs)
    if schema_url:
        parts.append(field_bytes(RESOURCE_LOGS_SCHEMA_URL, schema_url))
    return b"".join(parts)


def request_bytes(resource_logs: list[bytes]) -> bytes:
    """A serialized ``ExportLogsServiceRequest`` from serialized ``ResourceLogs``."""
    return b"".join(field_bytes(REQUEST_RESOURCE_LOGS, r) for r in resource_logs)


def attributes_bytes(pairs: list[tuple[str, Any]]) -> bytes:
    """Serialized ``LogRecord.attributes`` entries for ``(key, python value)`` pairs, to append to a
    serialized record. Values: str, bool, int, float, list of str."""
    record = logs_pb2.LogRecord()
    for key, value in pairs:
        kv = record.attributes.add()
        kv.key = key
        set_any_value(kv.value, value)
    return record.SerializeToString()


def set_any_value(target: common_pb2.AnyValue, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            set_any_value(target.array_value.values.add(), item)
    else:
        raise TypeError(f"unsupported attribute value {value!r}")
