"""otlp.codec: lenient decoding (invalid UTF-8), OTLP JSON, value rendering, request assembly."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.otlp import codec
from otel_logbert.otlp.forwarder import Mark, build_request
from otel_logbert.sessions.session import OriginTable


def request_with(
    body: common_pb2.AnyValue | None = None, **fields: object
) -> logs_service_pb2.ExportLogsServiceRequest:
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rl.resource.attributes.add(key="service.name").value.string_value = "cart"
    sl = rl.scope_logs.add(schema_url="s")
    sl.scope.name = "app"
    sl.scope.version = "1.2"
    record = sl.log_records.add(**fields)
    if body is not None:
        record.body.CopyFrom(body)
    return request


def test_invalid_utf8_decodes_and_round_trips_byte_for_byte() -> None:
    wire = request_with(common_pb2.AnyValue(string_value="caf\u00e9 XXXXXX")).SerializeToString()
    wire = wire.replace(b"XXXXXX", b"\xff\xfe bad")  # same length: only the bytes change
    with pytest.raises(DecodeError):  # what a strict decoder would do with it
        logs_service_pb2.ExportLogsServiceRequest.FromString(wire)
    lenient = codec.decode_protobuf(wire)
    record = lenient.resource_logs[0].scope_logs[0].log_records[0]
    assert record.body.string_value.endswith(b"\xff\xfe bad")
    assert codec.render_value(record.body) == "caf\u00e9 \ufffd\ufffd bad"
    assert lenient.SerializeToString() == wire


def test_malformed_protobuf_is_one_line() -> None:
    with pytest.raises(codec.MalformedRequest) as info:
        codec.decode_protobuf(b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert "\n" not in str(info.value) and "malformed protobuf" in str(info.value)


def test_otlp_json_hex_ids_string_int64_and_int_enums() -> None:
    body = {
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
            "scopeLogs": [{
                "scope": {"name": "app"},
                "logRecords": [{
                    "timeUnixNano": "1700000000000000001",
                    "severityNumber": 17,
                    "traceId": "5b8efff798038103d269b633813fc60c",
                    "spanId": "eee19b7ec3c1b174",
                    "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "hi"}}]}},
                    "attributes": [{"key": "n", "value": {"intValue": "42"}}],
                    "someFutureField": True,
                }],
            }],
        }]
    }
    lenient = codec.decode_json(json.dumps(body).encode())
    record = lenient.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert record.span_id.hex() == "eee19b7ec3c1b174"
    assert record.time_unix_nano == 1700000000000000001
    assert record.severity_number == 17
    assert record.attributes[0].value.int_value == 42
    assert codec.render_value(record.body) == '{"msg":"hi"}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]}', "traceId 'xyz' is not hex"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": "abcd"}]}]}]}', "spanId must be 8 bytes"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": [1]}]}]}]}', "invalid OTLP JSON"),
        (b'{"resourceLogs": "nope"}', "invalid OTLP JSON"),
        (b"\xff\xfe{}", "malformed JSON"),
    ],
)
def test_bad_json_is_a_one_line_malformed_request(body: bytes, message: str) -> None:
    with pytest.raises(codec.MalformedRequest, match=message) as info:
        codec.decode_json(body)
    assert "\n" not in str(info.value)


def test_render_value_is_stable_for_every_kind() -> None:
    def v(**kw: object) -> object:
        return codec.LenientAnyValue.FromString(common_pb2.AnyValue(**kw).SerializeToString())

    kv = common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key="b", value=common_pb2.AnyValue(int_value=2)),
        common_pb2.KeyValue(key="a", value=common_pb2.AnyValue(bool_value=True)),
    ])
    array = common_pb2.ArrayValue(values=[common_pb2.AnyValue(double_value=1.5), common_pb2.AnyValue()])
    assert codec.render_value(v(string_value="plain")) == "plain"
    assert codec.render_value(v()) == ""
    assert codec.render_value(v(int_value=7)) == "7"
    assert codec.render_value(v(bytes_value=b"\x00\x01")) == json.dumps(base64.b64encode(b"\x00\x01").decode())
    assert codec.render_value(v(kvlist_value=kv)) == '{"a":true,"b":2}'  # keys sorted
    assert codec.render_value(v(array_value=array)) == "[1.5,null]"


def test_build_request_regroups_by_resource_and_scope_preserving_everything() -> None:
    first = request_with(common_pb2.AnyValue(string_value="one"), trace_id=b"\x01" * 16, flags=1,
                         severity_number=logs_pb2.SEVERITY_NUMBER_WARN, severity_text="WARN",
                         time_unix_nano=5, observed_time_unix_nano=6, event_name="ev")
    other = request_with(common_pb2.AnyValue(bytes_value=b"\x00\xff"))
    other.resource_logs[0].resource.attributes[0].value.string_value = "payments"
    lenient = [codec.decode_protobuf(r.SerializeToString()) for r in (first, other, first)]
    origins = OriginTable()
    items = []
    for request in lenient:
        rl = request.resource_logs[0]
        sl = rl.scope_logs[0]
        origin = origins.get(rl.resource.SerializeToString(), rl.schema_url, sl.scope.SerializeToString(),
                             sl.schema_url, "")
        items.append((origin, sl.log_records[0].SerializeToString(), codec.attributes_bytes([("x", 1)]), Mark(0.0), 0))
    assert len(origins) == 2  # identical origins are interned
    rebuilt = logs_service_pb2.ExportLogsServiceRequest.FromString(build_request(items))
    assert len(rebuilt.resource_logs) == 2
    cart, payments = rebuilt.resource_logs
    assert cart.schema_url == "https://opentelemetry.io/schemas/1.26.0"
    assert cart.scope_logs[0].scope.version == "1.2" and cart.scope_logs[0].schema_url == "s"
    assert len(cart.scope_logs) == 1 and len(cart.scope_logs[0].log_records) == 2
    record = cart.scope_logs[0].log_records[0]
    expected = first.resource_logs[0].scope_logs[0].log_records[0]
    assert record.body == expected.body and record.trace_id == expected.trace_id
    assert (record.flags, record.severity_text, record.time_unix_nano, record.event_name) == (1, "WARN", 5, "ev")
    assert [(a.key, a.value.int_value) for a in record.attributes] == [("x", 1)]
    assert payments.scope_logs[0].log_records[0].body.bytes_value == b"\x00\xff"


def test_unset_resource_and_scope_stay_unset() -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    origin = OriginTable().get(None, b"", None, b"", "")
    record = codec.decode_protobuf(request.SerializeToString()).resource_logs[0].scope_logs[0].log_records[0]
    rebuilt = logs_service_pb2.ExportLogsServiceRequest.FromString(
        build_request([(origin, record.SerializeToString(), b"", Mark(0.0), 0)]))
    assert not rebuilt.resource_logs[0].HasField("resource")
    assert not rebuilt.resource_logs[0].scope_logs[0].HasField("scope")


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16384, 2**31])
def test_varint_matches_protobuf(n: int) -> None:
    value = common_pb2.AnyValue(int_value=n).SerializeToString()
    assert value == b"\x18" + codec.varint(n)
