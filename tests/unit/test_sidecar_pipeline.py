"""The sidecar in-process: records in over OTLP, out at a real downstream receiver with attributes.

Each test runs a real ``Sidecar`` (receivers on ephemeral ports, the embedded ONNX Runtime scorer
on a hand-built rule bundle, see ``conftest.make_rule_bundle``) and a real gRPC ``OtlpSink``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.otlp import codec
from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD, LOGS_SERVICE
from otel_logbert.parsing.drain import LogParser
from otel_logbert.sessions.learn import parser_state_path
from tests.conftest import NORMAL_MESSAGES, OWNED, OtlpSink, running_sidecar, sidecar_config

TRACE_A = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_B = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("b7ad6b7169203331")


def template_of(text: str) -> str:
    """What a fresh default parser makes of ``text`` (the masking rules are the parser's business)."""
    return LogParser().parse(text).template


def attributes(record: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}


def original_part(record: Any) -> Any:
    """The record without the attributes the sidecar adds."""
    copy = logs_pb2.LogRecord()
    copy.CopyFrom(record)
    del copy.attributes[:]
    copy.attributes.extend(kv for kv in record.attributes if not kv.key.startswith(OWNED))
    return copy


def request(records: list[logs_pb2.LogRecord], service: str = "cart") -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = service
    sl = rl.scope_logs.add()
    sl.scope.name = "shop"
    sl.log_records.extend(records)
    return req


def log(body: str, trace_id: bytes = TRACE_A, **fields: Any) -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value=body), trace_id=trace_id,
                              span_id=SPAN if trace_id else b"", **fields)


async def send(sidecar: Any, payload: bytes | logs_service_pb2.ExportLogsServiceRequest) -> bytes:
    body = payload if isinstance(payload, bytes) else payload.SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports['grpc']}") as channel:
        return await channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10)


def wait(sink: OtlpSink, n: int) -> Any:
    return asyncio.to_thread(sink.wait_for_records, n)


def test_every_field_and_body_kind_passes_through_with_attributes_added(otlp_sink: OtlpSink,
                                                                          rule_bundle: Path) -> None:
    kv = common_pb2.KeyValueList(values=[common_pb2.KeyValue(key="msg", value=common_pb2.AnyValue(
        string_value="user 42 logged in from 10.1.2.3"))])
    bodies = [
        common_pb2.AnyValue(string_value=NORMAL_MESSAGES[3]),
        common_pb2.AnyValue(kvlist_value=kv),
        common_pb2.AnyValue(bytes_value=b"\x00\x01\xfe"),
        common_pb2.AnyValue(),
        common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[common_pb2.AnyValue(int_value=1)])),
        common_pb2.AnyValue(double_value=2.5),
    ]
    originals = []
    for i, body in enumerate(bodies):
        record = logs_pb2.LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i, observed_time_unix_nano=1_700_000_000_100_000_000,
            severity_number=logs_pb2.SEVERITY_NUMBER_ERROR, severity_text="ERROR", body=body,
            trace_id=TRACE_A, span_id=SPAN, flags=1, dropped_attributes_count=3, event_name="e",
        )
        record.attributes.add(key="seq").value.int_value = i
        record.attributes.add(key="http.method").value.string_value = "GET"
        originals.append(record)
    req = request(originals)
    req.resource_logs[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    req.resource_logs[0].resource.dropped_attributes_count = 1
    req.resource_logs[0].scope_logs[0].scope.version = "9"
    other = request([log(NORMAL_MESSAGES[4], TRACE_B)], service="payments")

    async def scenario() -> list[Any]:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            await send(sidecar, req)
            await send(sidecar, other)
            return await wait(otlp_sink, 7)

    received = asyncio.run(scenario())
    assert len(received) == 7
    by_seq = {attributes(r).get("seq"): (res, scope, r) for res, scope, r in received}
    for i, original in enumerate(originals):
        resource, scope, record = by_seq[i]
        assert original_part(record) == original  # unchanged apart from the added attributes
        assert resource == req.resource_logs[0].resource and scope == req.resource_logs[0].scope_logs[0].scope
        added = attributes(record)
        assert added["log.anomaly.status"] == "scored"
        assert added["log.anomaly.session.length"] == 6
        assert added["log.anomaly.model"] == "fastlogad" and added["log.anomaly.model_version"] == "rule-1"
        assert isinstance(added["log.record.template"], str) and added["log.record.template"]
    assert attributes(by_seq[0][2])["log.record.template"] == template_of(NORMAL_MESSAGES[3])
    # kvlist bodies are parsed as their stable rendering
    assert attributes(by_seq[1][2])["log.record.template"] == template_of('{"msg":"user 42 logged in from 10.1.2.3"}')
    assert attributes(by_seq[3][2])["log.record.template"] == "<empty>"
    # resources are regrouped: the payments record came under its own resource
    services = {res.attributes[0].value.string_value for res, _, _ in received}
    assert services == {"cart", "payments"}


def test_verdicts_scores_and_unexpected_records(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    normal = [log(m, TRACE_A) for m in NORMAL_MESSAGES[:3]]
    odd = [log(NORMAL_MESSAGES[0], TRACE_B), log("kernel panic: cannot mount root fs", TRACE_B)]

    async def scenario() -> list[Any]:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            await send(sidecar, request(normal + odd))
            return await wait(otlp_sink, 5)

    records = [r for _, _, r in asyncio.run(scenario())]
    received = [attributes(r) | {"body": r.body.string_value} for r in records]
    by_session: dict[str, list[dict[str, Any]]] = {}
    for a in received:
        by_session.setdefault(a["log.anomaly.session.id"], []).append(a)
    assert len(by_session) == 2
    sessions = sorted(by_session.values(), key=len, reverse=True)
    assert all(a["log.anomaly.is_anomaly"] is False and a["log.anomaly.score"] == 0.0 for a in sessions[0])
    assert all(a["log.anomaly.is_anomaly"] is True and a["log.anomaly.score"] == 1.0 for a in sessions[1])
    assert all(a["log.anomaly.threshold"] == 0.5 for a in received)
    flags = {a["body"]: a["log.anomaly.unexpected"] for a in sessions[1]}
    assert flags == {"kernel panic: cannot mount root fs": True, NORMAL_MESSAGES[0]: False}
    assert sessions[1][0]["log.anomaly.session.id"].startswith(TRACE_B.hex() + "/")


def test_records_without_trace_id_go_on_unsessioned(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    async def scenario() -> list[Any]:
        config = sidecar_config(otlp_sink.endpoint, rule_bundle, sessions={"inactivity_timeout_s": 30})
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log("no trace here", b""), log("zero", b"\x00" * 16)]))
            return await wait(otlp_sink, 2)  # long before any session could time out

    received = [attributes(r) for _, _, r in asyncio.run(scenario())]
    assert [a["log.anomaly.status"] for a in received] == ["unsessioned", "unsessioned"]
    assert received[0]["log.anomaly.reason"] == "record has no trace id"
    assert received[0]["log.record.template"] == "no trace here"


def test_invalid_utf8_body_passes_through_byte_for_byte(rule_bundle: Path) -> None:
    wire = request([log("bad XXXX bytes")]).SerializeToString().replace(b"XXXX", b"\xff\xc3\x28\xa0")
    raw: list[bytes] = []
    asyncio.run(_lenient_roundtrip(wire, rule_bundle, raw))
    record = codec.decode_protobuf(raw[0]).resource_logs[0].scope_logs[0].log_records[0]
    assert record.body.string_value == b"bad \xff\xc3\x28\xa0 bytes"  # unchanged
    (template,) = [kv.value.string_value for kv in record.attributes if kv.key == b"log.record.template"]
    assert template.decode("utf-8") == template_of(b"bad \xff\xc3\x28\xa0 bytes".decode("utf-8", "replace"))


async def _lenient_roundtrip(wire: bytes, bundle: Path, raw: list[bytes]) -> None:
    """Send ``wire`` through a sidecar whose downstream is a byte-level gRPC server (a strict
    protobuf server would reject the invalid UTF-8 itself); keep the bytes it receives."""
    server = grpc.aio.server()

    async def export(body: bytes, context: Any) -> bytes:
        raw.append(body)
        return b""

    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        config = sidecar_config(f"127.0.0.1:{port}", bundle, traces={"enabled": False})
        async with running_sidecar(config) as sidecar:
            await send(sidecar, wire)
            for _ in range(500):
                if raw:
                    break
                await asyncio.sleep(0.01)
    finally:
        await server.stop(0)
    assert raw, "nothing forwarded"


def test_attributes_the_sidecar_owns_are_replaced_not_duplicated(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    record = log(NORMAL_MESSAGES[0])
    record.attributes.add(key="log.anomaly.score").value.string_value = "forged"
    record.attributes.add(key="log.record.template").value.string_value = "forged"
    record.attributes.add(key="keep.me").value.bool_value = True

    async def scenario() -> list[Any]:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            await send(sidecar, request([record]))
            return await wait(otlp_sink, 1)

    (_, _, out), = asyncio.run(scenario())
    keys = [kv.key for kv in out.attributes]
    assert keys.count("log.anomaly.score") == 1 and keys.count("log.record.template") == 1
    assert attributes(out)["log.anomaly.score"] == 0.0 and attributes(out)["keep.me"] is True


def test_failing_model_fails_open(otlp_sink: OtlpSink, broken_bundle: Path) -> None:
    async def scenario() -> list[Any]:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, broken_bundle)) as sidecar:
            await send(sidecar, request([log(m) for m in NORMAL_MESSAGES]))
            return await wait(otlp_sink, len(NORMAL_MESSAGES))

    received = [attributes(r) for _, _, r in asyncio.run(scenario())]
    assert {a["log.anomaly.status"] for a in received} == {"unscored"}
    assert received[0]["log.anomaly.reason"].startswith("scoring failed: ScoringError: ONNX Runtime scoring failed")
    assert "log.anomaly.score" not in received[0]


def test_services_route_to_their_own_bundles(otlp_sink: OtlpSink, rule_bundle: Path, broken_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, scoring={"routes": {"payments": str(broken_bundle)}})

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            assert [lane.name for lane in sidecar.router.lanes] == ["default", "broken-default"]
            await send(sidecar, request([log(NORMAL_MESSAGES[0], TRACE_A)], service="cart"))
            await send(sidecar, request([log(NORMAL_MESSAGES[0], TRACE_B)], service="payments"))
            return await wait(otlp_sink, 2)

    status = {res.attributes[0].value.string_value: attributes(r)["log.anomaly.status"]
              for res, _, r in asyncio.run(scenario())}
    assert status == {"cart": "scored", "payments": "unscored"}


def test_parse_field_from_a_kvlist_body_key(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    body = common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key="level", value=common_pb2.AnyValue(string_value="info")),
        common_pb2.KeyValue(key="msg", value=common_pb2.AnyValue(string_value="order 9 created for user 1")),
    ]))
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, parsing={"field": "body.msg"})

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([logs_pb2.LogRecord(body=body, trace_id=TRACE_A)]))
            return await wait(otlp_sink, 1)

    (_, _, out), = asyncio.run(scenario())
    assert attributes(out)["log.record.template"] == template_of("order 9 created for user 1")
    assert attributes(out)["log.anomaly.is_anomaly"] is False  # the bundle knows this template


def test_regex_sessions_on_hdfs_block_ids(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    lines = [m.replace("blk_1", f"blk_{b}") for b in (11, 22) for m in NORMAL_MESSAGES[:3]]
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            sessions={"key": "regex", "regex": r"(blk_-?\d+)", "inactivity_timeout_s": 0.2})

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log(line, b"") for line in lines]))
            return await wait(otlp_sink, 6)

    ids = {attributes(r)["log.anomaly.session.id"].split("/")[0] for _, _, r in asyncio.run(scenario())}
    assert ids == {"blk_11", "blk_22"}


def test_large_requests_are_masked_in_the_worker_process_in_order(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    """Requests of 64+ unseen bodies are masked by the ``parsing.workers`` process: every record
    arrives once, in its session in the order sent, with the template the in-process parser gives."""
    blocks = 20
    lines = [(b, i, NORMAL_MESSAGES[i % 3].replace("blk_1", f"blk_{b}")) for i in range(6) for b in range(blocks)]
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, parsing={"workers": 1},
                            sessions={"key": "regex", "regex": r"(blk_-?\d+)", "inactivity_timeout_s": 0.3})

    async def scenario() -> tuple[list[Any], int]:
        async with running_sidecar(config) as sidecar:
            worker = sidecar.router.masking_worker
            await send(sidecar, request([log(f"{text} #{i} round 0", b"") for _, i, text in lines]))
            for _ in range(600):  # the first large request started the process; wait until it answers
                if worker.offloads(999):
                    break
                await asyncio.sleep(0.05)
            await send(sidecar, request([log(f"{text} #{i} round 1", b"") for _, i, text in lines]))
            records = await wait(otlp_sink, 2 * len(lines))
            return records, worker.batches

    records, worker_batches = asyncio.run(scenario())
    assert worker_batches >= 1
    assert len(records) == 2 * len(lines)
    bodies = [r.body.string_value for _, _, r in records]
    assert sorted(bodies) == sorted(f"{text} #{i} round {n}" for n in (0, 1) for _, i, text in lines)
    by_session: dict[str, list[str]] = {}
    for _, _, r in records:
        by_session.setdefault(attributes(r)["log.anomaly.session.id"], []).append(r.body.string_value)
        assert attributes(r)["log.record.template"] == template_of(r.body.string_value)
    for bodies_of_session in by_session.values():
        order = [(body.endswith("round 1"), int(body.split("#")[1].split()[0])) for body in bodies_of_session]
        assert order == sorted(order)  # as sent


def test_max_length_and_shutdown_close_sessions(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            sessions={"max_length": 4, "inactivity_timeout_s": 60, "max_age_s": 600})

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log(NORMAL_MESSAGES[0]) for _ in range(10)]))
            await wait(otlp_sink, 8)  # two full sessions close at once; 2 records stay open
        return otlp_sink.records()  # stop() flushed the rest

    lengths = sorted(attributes(r)["log.anomaly.session.length"] for _, _, r in asyncio.run(scenario()))
    assert lengths == [2, 2, 4, 4, 4, 4, 4, 4, 4, 4]


def test_memory_cap_closes_oldest_sessions_early(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            sessions={"max_open_sessions": 2, "inactivity_timeout_s": 60, "max_age_s": 600})
    traces = [bytes([i + 1]) * 16 for i in range(5)]

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log(NORMAL_MESSAGES[0], t) for t in traces]))
            received = await wait(otlp_sink, 3)
            assert len(sidecar.pipeline.store) == 2
            return received

    received = asyncio.run(scenario())
    early = {r.trace_id for _, _, r in received[:3]}
    assert early == set(traces[:3])


def test_learn_mode_writes_sessions_and_parser_state(otlp_sink: OtlpSink, tmp_path: Path) -> None:
    output = tmp_path / "learned" / "sessions.txt"
    config = sidecar_config(otlp_sink.endpoint, None, learn={"enabled": True, "score": False, "output": str(output)})

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log(m, TRACE_A) for m in NORMAL_MESSAGES[:3]]
                                        + [log(m, TRACE_B) for m in NORMAL_MESSAGES[3:]]))
            return await wait(otlp_sink, 6)

    received = asyncio.run(scenario())
    assert {attributes(r)["log.anomaly.status"] for _, _, r in received} == {"unscored"}
    lines = sorted(output.read_text().splitlines())
    assert len(lines) == 2 and all(len(line.split()) == 3 for line in lines)
    from otel_logbert.parsing.drain import LogParser

    parser = LogParser.load(parser_state_path(output))
    assert {k for line in lines for k in line.split()} == set(parser.templates())


def test_span_event_in_the_session_trace(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    records = [log(NORMAL_MESSAGES[0], TRACE_B, time_unix_nano=1_000), log("never seen before", TRACE_B,
                                                                           time_unix_nano=5_000)]

    async def scenario() -> None:
        async with running_sidecar(sidecar_config(otlp_sink.endpoint, rule_bundle)) as sidecar:
            await send(sidecar, request(records))
            await wait(otlp_sink, 2)
        await asyncio.to_thread(otlp_sink.wait_for_spans, 1)

    asyncio.run(scenario())
    (resource, span), = otlp_sink.spans()
    assert span.name == "log.anomaly.session"
    assert span.trace_id == TRACE_B and span.parent_span_id == SPAN and span.span_id != SPAN
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (1_000, 5_000)
    assert attributes(resource)["service.name"] == "otel-logbert"
    (event,) = span.events
    event_attrs = {kv.key: kv.value for kv in event.attributes}
    assert event.name == "log.anomaly"
    assert event_attrs["log.anomaly.is_anomaly"].bool_value is True
    assert event_attrs["log.anomaly.score"].double_value == 1.0
    assert [v.string_value for v in event_attrs["log.anomaly.unexpected_templates"].array_value.values] == [
        "never seen before"]


@pytest.mark.parametrize("only_anomalies", [True, False])
def test_span_events_for_normal_sessions_are_optional(otlp_sink: OtlpSink, rule_bundle: Path,
                                                      only_anomalies: bool) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, traces={"only_anomalies": only_anomalies})

    async def scenario() -> None:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log(NORMAL_MESSAGES[0], TRACE_A)]))
            await wait(otlp_sink, 1)

    asyncio.run(scenario())
    assert len(otlp_sink.spans()) == (0 if only_anomalies else 1)


@pytest.mark.parametrize(("slide_s", "expected"), [(10, {"svc|n1@0": 3, "svc|n1@10": 1}),
                                                     (5, {"svc|n1@0": 2, "svc|n1@5": 1, "svc|n1@10": 1})])
def test_time_windows_per_resource_key(otlp_sink: OtlpSink, rule_bundle: Path, slide_s: int,
                                       expected: dict[str, int]) -> None:
    """Windows of 10 s per (service, host); sliding windows give each record to the latest window."""
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, sessions={
        "key": "window", "resource_attributes": ["service.name", "host.name"], "inactivity_timeout_s": 0.2,
        "window": {"size_s": 10, "slide_s": slide_s}})
    req = request([log(NORMAL_MESSAGES[0], b"", time_unix_nano=t * 10**9) for t in (1, 4, 7, 12)], service="svc")
    req.resource_logs[0].resource.attributes.add(key="host.name").value.string_value = "n1"

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, req)
            return await wait(otlp_sink, 4)

    received = asyncio.run(scenario())
    by_window: dict[str, int] = {}
    for _, _, r in received:
        window = attributes(r)["log.anomaly.session.id"].rsplit("/", 1)[0]
        by_window[window] = by_window.get(window, 0) + 1
    assert by_window == expected
    if slide_s == 5:
        # [0, 10) owns the records at 1 s and 4 s and also sees the key at 7 s (owned by [5, 15));
        # [5, 15) owns 7 s and sees 12 s (owned by [10, 20)).
        lengths = {}
        for _, _, r in received:
            a = attributes(r)
            lengths[a["log.anomaly.session.id"].rsplit("/", 1)[0]] = a["log.anomaly.session.length"]
        assert lengths["svc|n1@0"] == 3 and lengths["svc|n1@5"] == 2


def test_own_metrics_over_otlp(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, telemetry={
        "endpoint": None, "otlp_metrics": {"enabled": True, "interval_s": 0.2}})

    async def scenario() -> None:
        async with running_sidecar(config) as sidecar:
            await send(sidecar, request([log("hello", b"")]))
            await wait(otlp_sink, 1)
            for _ in range(100):
                if otlp_sink.metrics:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    names = {m.name for req in otlp_sink.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"otel_logbert.records.received", "otel_logbert.sessions.open"} <= names


def test_learn_only_with_a_bundle_continues_its_key_ids(otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path) -> None:
    output = tmp_path / "more.txt"
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            learn={"enabled": True, "score": False, "output": str(output)})

    async def scenario() -> None:
        async with running_sidecar(config) as sidecar:
            assert sidecar.router.default.scorer is None
            await send(sidecar, request([log(m, TRACE_A) for m in reversed(NORMAL_MESSAGES)]))
            await wait(otlp_sink, len(NORMAL_MESSAGES))

    asyncio.run(scenario())
    from otel_logbert.bundle import load_bundle

    bundle = load_bundle(rule_bundle)
    bundle_parser = LogParser.from_json(bundle.drain_state or {})
    expected = [bundle_parser.match(m).key for m in reversed(NORMAL_MESSAGES)]  # type: ignore[union-attr]
    (line,) = output.read_text().splitlines()
    assert line.split() == expected
    assert set(expected) == set(bundle.vocab.keys)  # all known to the model: no new ids were made up


@pytest.mark.parametrize("order", ["time", "arrival"])
def test_a_trace_scrambled_by_resource_grouping_is_scored_in_time_order(
        otlp_sink: OtlpSink, rule_bundle: Path, order: str) -> None:
    """One trace over two services, sent the way OTLP exporters batch it (grouped by resource):
    the payments records come first although the cart's happened earlier."""
    cart_span, payments_span = bytes.fromhex("00000000000000c1"), bytes.fromhex("00000000000000d1")
    t0 = 1_700_000_000_000_000_000
    cart = [log(NORMAL_MESSAGES[3], TRACE_A, time_unix_nano=t0 + 10),
            log(NORMAL_MESSAGES[4], TRACE_A, time_unix_nano=t0 + 20)]
    payments = [log("payment gateway timed out", TRACE_A, observed_time_unix_nano=t0 + 30),
                log(NORMAL_MESSAGES[5], TRACE_A, time_unix_nano=t0 + 40)]
    for records, span_id in ((cart, cart_span), (payments, payments_span)):
        for record in records:
            record.span_id = span_id
    req = request(payments, service="payments")
    req.resource_logs.extend(request(cart, service="cart").resource_logs)
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, sessions={"order": order})
    seen: list[list[str]] = []

    async def scenario() -> list[Any]:
        async with running_sidecar(config) as sidecar:
            lane = sidecar.router.default
            real_score = lane.score
            lane.score = lambda sessions: seen.extend(list(s) for s in sessions) or real_score(sessions)
            await send(sidecar, req)
            records = await wait(otlp_sink, 4)
        await asyncio.to_thread(otlp_sink.wait_for_spans, 1)
        return records

    received = asyncio.run(scenario())
    bodies_in_time_order = [r.body.string_value for r in cart + payments]
    bodies_as_sent = [r.body.string_value for r in payments + cart]
    expected = bodies_in_time_order if order == "time" else bodies_as_sent
    assert seen == [[template_key(rule_bundle, body) for body in expected]]
    # every record once, unchanged apart from the attributes; the unknown message alone is flagged
    assert sorted(r.SerializeToString() for r in map(original_part, (r for _, _, r in received))) == \
        sorted(r.SerializeToString() for r in cart + payments)
    flags = {r.body.string_value: attributes(r)["log.anomaly.unexpected"] for _, _, r in received}
    assert flags == {body: body == "payment gateway timed out" for body in bodies_in_time_order}
    services = {r.body.string_value: attributes(res)["service.name"] for res, _, r in received}
    assert services == {body: "cart" for body in bodies_in_time_order[:2]} | {
        body: "payments" for body in bodies_in_time_order[2:]}
    # the span's parent is the lead record's span: the earliest (time) or the first to arrive
    (_, span), = otlp_sink.spans()
    assert span.trace_id == TRACE_A
    assert span.parent_span_id == (cart_span if order == "time" else payments_span)
    assert span.start_time_unix_nano == (t0 + 10 if order == "time" else t0 + 30)
    assert span.end_time_unix_nano == t0 + 40


def template_key(bundle: Path, text: str) -> str:
    """The log key the bundle's parser gives ``text`` (a fresh copy: matching learns nothing)."""
    from otel_logbert.bundle import load_bundle

    parser = LogParser.from_json(load_bundle(bundle).drain_state or {})
    return parser.parse(text).key


def test_the_verdict_cache_answers_repeated_sessions_with_the_same_verdict(
    otlp_sink: OtlpSink, rule_bundle: Path
) -> None:
    """Eight traces with one key sequence and one with another: with the cache the model sees the two
    sequences once each (7 of 9 sessions answered by the cache), and every record carries exactly the
    attributes it carries without the cache (session ids aside)."""
    from tests.conftest import prometheus_value

    traces = [bytes([i + 1]) * 16 for i in range(9)]
    bodies = [list(NORMAL_MESSAGES[:3])] * 8 + [[NORMAL_MESSAGES[0], "never seen before at all", NORMAL_MESSAGES[2]]]

    async def scenario(entries: int) -> tuple[list[Any], float]:
        otlp_sink.clear()
        config = sidecar_config(otlp_sink.endpoint, rule_bundle, scoring={"cache_entries": entries})
        async with running_sidecar(config) as sidecar:
            for trace, messages in zip(traces, bodies, strict=True):
                await send(sidecar, request([log(m, trace) for m in messages]))
            records = await asyncio.to_thread(otlp_sink.wait_for_records, 27)
            text = sidecar.metrics.prometheus_text().decode()
        return records, prometheus_value(text, "otel_logbert_scoring_cache_hit_rate")

    def verdicts(records: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for _, _, record in records:
            attrs = {k: v for k, v in attributes(record).items() if k != "log.anomaly.session.id"}
            out.append((record.trace_id.hex() + record.body.string_value, attrs))
        return sorted(out, key=lambda pair: pair[0])

    cached, hit_rate = asyncio.run(scenario(1000))
    plain, no_cache = asyncio.run(scenario(0))
    assert verdicts(cached) == verdicts(plain)
    assert hit_rate == pytest.approx(7 / 10)  # + the warm-up session, a miss
    assert no_cache == 0.0


def test_delivered_sessions_leave_the_back_pressure_count(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    """Once everything is delivered nothing is held: a scored session's records must not stay
    counted (they did, once the scoring queue released the weight of an already emptied session,
    so a sidecar refused everything after ``queue_max_records`` records in all)."""
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, forward={"queue_max_records": 100})

    async def scenario() -> list[int]:
        async with running_sidecar(config) as sidecar:
            held = []
            for round_ in range(3):  # 3 x 60 records > queue_max_records: refused if any stayed counted
                traces = [bytes([round_ + 1, t + 1]) * 8 for t in range(12)]
                await send(sidecar, request([log(NORMAL_MESSAGES[i % 5], trace) for trace in traces
                                             for i in range(5)]))
                await wait(otlp_sink, 60 * (round_ + 1))
                for _ in range(100):
                    if not sidecar.pipeline.admission.held:
                        break
                    await asyncio.sleep(0.02)
                held.append(sidecar.pipeline.admission.held)
            assert sidecar.ready() == (True, "")
            return held

    assert asyncio.run(scenario()) == [0, 0, 0]
