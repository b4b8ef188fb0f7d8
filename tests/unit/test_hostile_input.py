"""Hostile input on both receivers (issue 11): decompression bombs, unknown or lying Content-Encoding,
deep JSON, too many records or attributes, an unbounded Drain, credentials in endpoints, readiness.

Each request goes to a real in-process sidecar over real localhost ports; after each refusal a
normal request must still succeed (the process stays healthy).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from otel_logbert.config import ConfigError, config_from_dict
from otel_logbert.otlp.inflate import BadEncoding, Inflater, TooLarge
from otel_logbert.otlp.retry import retry_info_delay
from otel_logbert.parsing.drain import LogParser
from tests.conftest import OtlpSink, free_port, prometheus_value, sidecar_config
from tests.unit.test_sidecar_receiver import grpc_export, http_post, request, run

PROTOBUF = "application/x-protobuf"


def bomb(inflated_mib: int, wbits: int) -> bytes:
    """A compressed stream of ``inflated_mib`` MiB of zeros, built in milliseconds: after a full flush
    the compressor's output for the next MiB of zeros is the same bytes, so one piece is repeated.
    ``wbits`` 31: gzip, 15: zlib (HTTP deflate). The stream has no end: a reader that inflates it all
    burns seconds of CPU before noticing."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head + piece * (inflated_mib - 1)


async def healthy(sidecar: Any) -> tuple[int, int, grpc.StatusCode]:
    """(HTTP status of a normal export, /healthz status, gRPC code of a normal export)."""
    http_status = (await http_post(sidecar, request(1, "normal"), PROTOBUF))[0]
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{sidecar.telemetry.port}/healthz"
    ) as response:
        health = response.status
    return http_status, health, (await grpc_export(sidecar, request(1, "normal")))[0]


HEALTHY = (200, 200, grpc.StatusCode.OK)


def test_decompression_bombs_are_cut_at_the_limit(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    """A 2 MB body inflating to 2 GiB is answered 413 having inflated at most max_body_bytes: before,
    the sidecar inflated all 2 GiB (about 7 s of CPU); here the bound is 2 s of this process's CPU
    for both bombs, the response and the follow-up requests together."""
    gzip_bomb, deflate_bomb = bomb(2048, 31), bomb(2048, 15)
    assert len(gzip_bomb) < 2_200_000

    async def scenario(sidecar: Any) -> dict[str, Any]:
        cpu = time.process_time()
        out = {
            "gzip": await http_post(sidecar, gzip_bomb, PROTOBUF, **{"Content-Encoding": "gzip"}),
            "deflate": await http_post(sidecar, deflate_bomb, PROTOBUF, **{"Content-Encoding": "deflate"}),
        }
        await asyncio.sleep(0.3)  # anything inflating in the background would burn CPU meanwhile
        out["healthy"] = await healthy(sidecar)
        out["cpu_s"] = time.process_time() - cpu
        return out

    out = run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)
    assert out["gzip"][0] == 413 and out["deflate"][0] == 413
    assert out["healthy"] == HEALTHY
    assert out["cpu_s"] < 2.0, f"bombs cost {out['cpu_s']:.2f} s of CPU"


def test_encodings_accepted_refused_and_lying(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    body = request(1, "encoded")
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = raw_deflate.compress(body) + raw_deflate.flush()

    async def scenario(sidecar: Any) -> dict[str, Any]:
        post = http_post
        return {
            "gzip": await post(sidecar, gzip.compress(body), PROTOBUF, **{"Content-Encoding": "gzip"}),
            "x-gzip": await post(sidecar, gzip.compress(body), PROTOBUF, **{"Content-Encoding": "x-gzip"}),
            "two_members": await post(sidecar, gzip.compress(body[:5]) + gzip.compress(body[5:]), PROTOBUF,
                                      **{"Content-Encoding": "gzip"}),
            "deflate": await post(sidecar, zlib.compress(body), PROTOBUF, **{"Content-Encoding": "deflate"}),
            "raw_deflate": await post(sidecar, raw, PROTOBUF, **{"Content-Encoding": "deflate"}),
            "identity": await post(sidecar, body, PROTOBUF, **{"Content-Encoding": "identity"}),
            "xz": await post(sidecar, body, PROTOBUF, **{"Content-Encoding": "xz"}),
            "stacked": await post(sidecar, body, PROTOBUF, **{"Content-Encoding": "gzip, br"}),
            "not_gzip": await post(sidecar, body, PROTOBUF, **{"Content-Encoding": "gzip"}),
            "truncated": await post(sidecar, gzip.compress(body)[:-9], PROTOBUF, **{"Content-Encoding": "gzip"}),
            "garbage_after": await post(sidecar, zlib.compress(body) + b"xx", PROTOBUF,
                                        **{"Content-Encoding": "deflate"}),
            "healthy": await healthy(sidecar),
        }

    out = run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)
    for name in ("gzip", "x-gzip", "two_members", "deflate", "raw_deflate", "identity"):
        assert out[name][0] == 200, (name, out[name][1])
    assert out["xz"][0] == 415 and b"unsupported Content-Encoding 'xz'" in out["xz"][1]
    assert out["stacked"][0] == 415
    for name in ("not_gzip", "truncated", "garbage_after"):
        assert out[name][0] == 400, (name, out[name][1])
    assert b"not valid gzip" in out["not_gzip"][1]
    assert out["healthy"] == HEALTHY
    otlp_sink.wait_for_records(6 + 2)


def test_inflater_limit_is_exact() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    for wbits, encoding in ((31, "gzip"), (15, "deflate")):
        compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
        stream = compressor.compress(data) + compressor.flush()
        fits = Inflater(encoding, len(data))
        for i in range(0, len(stream), 7):  # tiny chunks: headers split across feeds
            fits.feed(stream[i:i + 7])
        assert fits.finish() == data
        too_small = Inflater(encoding, len(data) - 1)
        with pytest.raises(TooLarge):
            too_small.feed(stream)
            too_small.finish()
    with pytest.raises(BadEncoding):
        Inflater("gzip", 100).finish()  # an empty body is not gzip


def json_request(kvlist_depth: int) -> bytes:
    """An OTLP/JSON request whose one body nests ``kvlist_depth`` kvlist AnyValues (written as text:
    json.dumps itself recurses too deep for the deepest)."""
    body = '{"kvlistValue":{"values":[{"key":"k","value":' * kvlist_depth + '{"stringValue":"leaf"}'
    body += "}]}}" * kvlist_depth
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + body + "}]}]}]}").encode()


def test_deep_json_is_refused_with_400(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    """Before: 300 levels raised RecursionError (HTTP 500, a traceback in the log)."""
    deep_arrays = b'{"resourceLogs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    async def scenario(sidecar: Any) -> dict[str, Any]:
        return {
            "ok": await http_post(sidecar, json_request(20), "application/json"),
            "deep": await http_post(sidecar, json_request(300), "application/json"),
            "deeper": await http_post(sidecar, json_request(3000), "application/json"),
            "arrays": await http_post(sidecar, deep_arrays, "application/json"),
            "healthy": await healthy(sidecar),
        }

    out = run(sidecar_config(otlp_sink.endpoint, rule_bundle), scenario)
    assert out["ok"][0] == 200
    for name in ("deep", "deeper", "arrays"):
        assert out[name][0] == 400, (name, out[name][1][:200])
        assert "nested deeper than" in json.loads(out[name][1])["message"]
    assert out["healthy"] == HEALTHY


def test_records_and_attributes_per_request_are_bounded(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    """Before: one 4 MB request of 2 million empty records was accepted (RSS 110 -> 510 MiB)."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    wide = logs_service_pb2.ExportLogsServiceRequest()
    record = wide.resource_logs.add().scope_logs.add().log_records.add()
    for i in range(6):
        record.attributes.add(key=f"k{i}").value.string_value = "v"
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"},
        "max_records_per_request": 10, "max_attributes_per_record": 5})

    async def scenario(sidecar: Any) -> dict[str, Any]:
        return {
            "http_ten": await http_post(sidecar, request(10), PROTOBUF),
            "http_eleven": await http_post(sidecar, request(11), PROTOBUF),
            "grpc_eleven": await grpc_export(sidecar, request(11)),
            "http_wide": await http_post(sidecar, wide.SerializeToString(), PROTOBUF),
            "grpc_wide": await grpc_export(sidecar, wide.SerializeToString()),
            "healthy": await healthy(sidecar),
            "metrics": sidecar.metrics.prometheus_text().decode(),
        }

    out = run(config, scenario)
    assert out["http_ten"][0] == 200
    assert out["http_eleven"][0] == 413 and b"11 log records, more than the 10" in out["http_eleven"][1]
    code, message, trailers = out["grpc_eleven"]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_records_per_request" in message
    assert retry_info_delay(trailers) is None  # not retryable: the same request would fail again
    assert out["http_wide"][0] == 413 and out["grpc_wide"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert out["healthy"] == HEALTHY
    assert prometheus_value(out["metrics"], "otel_logbert_requests_refused_total", protocol="http",
                            reason="limits") == 2


def _attribute_request(where: str, key: str = "k", value: Any = "v") -> Any:
    """A one-record request whose ``where`` (record, resource or scope) carries attribute ``key``:
    ``value`` (a str, bytes, or a list of str made an array value)."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    out = logs_service_pb2.ExportLogsServiceRequest()
    rl = out.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "shop"
    sl = rl.scope_logs.add()
    record = sl.log_records.add()
    record.body.string_value = "user 42 logged in from 10.1.2.3"
    owner = {"record": record, "resource": rl.resource, "scope": sl.scope}[where]
    kv = owner.attributes.add(key=key)
    if isinstance(value, bytes):
        kv.value.bytes_value = value
    elif isinstance(value, list):
        for item in value:
            kv.value.array_value.values.add().string_value = item
    else:
        kv.value.string_value = value
    return out


def test_attribute_key_and_value_sizes_are_bounded_in_code() -> None:
    from otel_logbert.otlp.limits import AttributeTooLarge, LimitExceeded, RequestLimits

    limits = RequestLimits(max_attributes=3, max_key_bytes=16, max_value_bytes=64)
    assert limits.check(_attribute_request("record", "k" * 16, "v" * 64)) == 1  # at the bounds: fine
    assert limits.check(_attribute_request("record", "é" * 8, "ü" * 32)) == 1  # bytes, not characters
    cases = [
        ("record", "k" * 17, "v", "resource_logs[0].scope_logs[0].log_records[0]: attribute key 'kkkkk",
         "is 17 bytes, more than the 16 allowed (receivers.max_attribute_key_bytes)"),
        ("resource", "é" * 9, "v", "resource_logs[0].resource: attribute key", "is 18 bytes"),
        ("scope", "k", "v" * 65, "resource_logs[0].scope_logs[0].scope: value of attribute 'k' is 65 bytes",
         "(receivers.max_attribute_value_bytes)"),
        ("record", "k", b"\0" * 65, "log_records[0]: value of attribute 'k' is 65 bytes", ""),
        ("record", "k", ["x" * 20] * 3, "log_records[0]: value of attribute 'k' is 74 bytes", ""),  # encoded total
    ]
    for where, key, value, head, tail in cases:
        with pytest.raises(AttributeTooLarge) as exc:
            limits.check(_attribute_request(where, key, value))
        assert head in str(exc.value) and tail in str(exc.value), str(exc.value)
        assert "\n" not in str(exc.value)
    with pytest.raises(AttributeTooLarge) as exc:  # a huge key is quoted cut short
        RequestLimits(max_key_bytes=16).check(_attribute_request("record", "k" * 10_000))
    assert "... (10000 characters)" in str(exc.value) and len(str(exc.value)) < 300
    wide_scope = _attribute_request("scope")
    for i in range(3):
        wide_scope.resource_logs[0].scope_logs[0].scope.attributes.add(key=f"s{i}")
    with pytest.raises(LimitExceeded, match=r"a scope has 4 attributes, more than the 3 allowed"):
        limits.check(wide_scope)
    assert RequestLimits().check(_attribute_request("record", "k" * 5000, "v" * 100_000)) == 1  # 0 = off


def test_attribute_size_check_looks_only_into_large_parts() -> None:
    """The fast path: a resource or record encoded in fewer bytes than the smaller bound is not looked
    into; 10,000 small records cost well under a millisecond each."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    from otel_logbert.otlp.limits import RequestLimits

    limits = RequestLimits(max_records=100_000, max_attributes=1024, max_key_bytes=1024,
                           max_value_bytes=1 << 20)
    big = logs_service_pb2.ExportLogsServiceRequest()
    records = big.resource_logs.add().scope_logs.add().log_records
    for i in range(10_000):
        record = records.add()
        record.body.string_value = f"user {i} logged in"
        record.attributes.add(key="http.route").value.string_value = "/cart"
    started = time.perf_counter()
    assert limits.check(big) == 10_000
    assert time.perf_counter() - started < 0.5


def test_attribute_sizes_are_refused_as_invalid_on_both_receivers(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"},
        "max_attribute_key_bytes": 32, "max_attribute_value_bytes": 4096})
    long_key = _attribute_request("record", "k" * 33).SerializeToString()
    big_value = _attribute_request("resource", "blob", "v" * 5000).SerializeToString()
    nested = _attribute_request("scope", "list", ["x" * 1000] * 5)
    nested_json = json.dumps({"resourceLogs": [{"scopeLogs": [{
        "scope": {"attributes": [{"key": "list", "value": {"arrayValue": {"values": [
            {"stringValue": "x" * 1000}] * 5}}}]},
        "logRecords": [{"body": {"stringValue": "user 42 logged in"}}]}]}]}).encode()

    async def scenario(sidecar: Any) -> dict[str, Any]:
        return {
            "http_key": await http_post(sidecar, long_key, PROTOBUF),
            "grpc_key": await grpc_export(sidecar, long_key),
            "http_value": await http_post(sidecar, big_value, PROTOBUF),
            "grpc_nested": await grpc_export(sidecar, nested.SerializeToString()),
            "http_json_nested": await http_post(sidecar, nested_json, "application/json"),
            "fine": await http_post(sidecar, _attribute_request("record", "k" * 32, "v" * 4000).SerializeToString(),
                                    PROTOBUF),
            "healthy": await healthy(sidecar),
            "metrics": sidecar.metrics.prometheus_text().decode(),
        }

    out = run(config, scenario)
    assert out["http_key"][0] == 400
    assert (b"resource_logs[0].scope_logs[0].log_records[0]: attribute key 'kkk" in out["http_key"][1]
            and b"(receivers.max_attribute_key_bytes)" in out["http_key"][1])
    code, message, _ = out["grpc_key"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is 33 bytes, more than the 32 allowed" in message
    assert out["http_value"][0] == 400
    assert b"resource_logs[0].resource: value of attribute 'blob'" in out["http_value"][1]
    code, message, _ = out["grpc_nested"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "scope_logs[0].scope: value of attribute 'list'" in message and "max_attribute_value_bytes" in message
    assert out["http_json_nested"][0] == 400, out["http_json_nested"]
    assert b"value of attribute 'list'" in out["http_json_nested"][1]
    assert out["fine"][0] == 200
    assert out["healthy"] == HEALTHY
    assert prometheus_value(out["metrics"], "otel_logbert_requests_refused_total", protocol="http",
                            reason="limits") == 3


def test_drain_cluster_count_is_capped_lru() -> None:
    parser = LogParser(max_clusters=3)
    keys = {}
    for shape in ("alpha one", "beta two three", "gamma x y z"):
        keys[shape] = parser.parse(shape).key
    parser.parse("alpha one")  # alpha is now the most recently used
    parser.parse("delta a b c d")  # a fourth cluster evicts the least recently used: beta
    assert parser.cluster_count == 3
    assert parser.match("alpha one").key == keys["alpha one"]
    assert parser.match("beta two three") is None
    for i in range(100):  # high cardinality stays bounded
        parser.parse(" ".join(["w"] * (i + 5)) + f" tail{i}")
    assert parser.cluster_count == 3
    restored = LogParser.from_json(parser.to_json(), max_clusters=2)
    assert restored.cluster_count == 2


def test_drain_cap_from_config(otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, None, parsing={"max_clusters": 5},
                            learn={"enabled": True, "score": False, "output": str(tmp_path / "learn.txt")})

    async def scenario(sidecar: Any) -> int:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        req = logs_service_pb2.ExportLogsServiceRequest()
        sl = req.resource_logs.add().scope_logs.add()
        for i in range(50):
            sl.log_records.add(body={"string_value": " ".join(["tok"] * (i + 1))})
        assert (await grpc_export(sidecar, req.SerializeToString()))[0] == grpc.StatusCode.OK
        return sidecar.router.lanes[0].parser.cluster_count

    assert run(config, scenario) == 5


@pytest.mark.parametrize("path, value", [
    ("forward.endpoint", "http://user:s3cret@127.0.0.1:4317"),
    ("forward.endpoint", "https://:s3cret@collector:4317"),
    ("traces.endpoint", "http://user:s3cret@127.0.0.1:4317"),
    ("telemetry.otlp_metrics.endpoint", "user:s3cret@127.0.0.1:4317"),
    ("scoring.triton.url", "admin:s3cret@triton:8001"),
])
def test_credentials_in_endpoints_are_refused_without_repeating_them(path: str, value: str) -> None:
    section, *rest = path.split(".")
    data: dict[str, Any] = {"scoring": {"bundle": "/b"}}
    node = data.setdefault(section, {})
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = value
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: credentials in the URL are refused") and "\n" not in message
    assert "s3cret" not in message and "user" not in message.split(":")[1]


@pytest.mark.parametrize("value, why", [
    ("ftp://collector:4317", "scheme 'ftp' is not http or https"),
    ("collector", "expected host:port"),
    ("http://collector:99999", "expected host:port"),
])
def test_malformed_endpoints_are_refused(value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        config_from_dict({"scoring": {"bundle": "/b"}, "forward": {"endpoint": value}}, environ={})


def test_readyz_follows_downstream_and_admission(rule_bundle: Path) -> None:
    """/readyz: 503 while the downstream is unreachable (the last export failed) and while admission
    refuses (queue full); 200 again once records flow."""
    sink = OtlpSink(free_port())  # not started: nothing listens
    config = sidecar_config(sink.endpoint, rule_bundle, forward={
        "endpoint": sink.endpoint, "queue_max_records": 3, "timeout_s": 1,
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.1}})

    async def readyz(sidecar: Any) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{sidecar.telemetry.port}/readyz"
        ) as response:
            return response.status, (await response.json())["reason"]

    async def scenario(sidecar: Any) -> dict[str, Any]:
        out = {"idle": await readyz(sidecar)}
        await grpc_export(sidecar, request(3, "held"))
        deadline = time.monotonic() + 10
        while sidecar.pipeline.forwarder.last_error == "" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        out["down_and_full"] = await readyz(sidecar)
        sidecar.pipeline.admission.limit = 100  # room again; the downstream is still down
        out["down"] = await readyz(sidecar)
        sink.start()
        await asyncio.to_thread(sink.wait_for_records, 3)
        await asyncio.sleep(0.05)
        out["flowing"] = await readyz(sidecar)
        return out

    try:
        out = run(config, scenario)
    finally:
        sink.stop()
    assert out["idle"] == (200, "")
    assert out["down_and_full"][0] == 503 and out["down_and_full"][1].startswith("queue full")
    assert out["down"][0] == 503 and out["down"][1].startswith("downstream failing")
    assert out["flowing"] == (200, "")
