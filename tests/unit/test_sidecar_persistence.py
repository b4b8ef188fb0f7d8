"""The persistent queue in a real ``Sidecar`` (in-process, real ports, a real downstream receiver and
real files): records kept over a stop while the downstream is down and delivered by the next start,
and a full log answered with back-pressure on both protocols until deliveries make room."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otel_logbert.config import config_from_dict
from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD, LOGS_SERVICE
from otel_logbert.otlp.retry import retry_info_delay
from otel_logbert.sidecar.app import Sidecar
from tests.conftest import NORMAL_MESSAGES, OtlpSink, prometheus_value, running_sidecar, sidecar_config


def request(first: int, n: int, padding: int = 0) -> bytes:
    """``n`` records with ``test.id`` ``first``.. ``first + n - 1``, one trace per five."""
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "cart"
    sl = rl.scope_logs.add()
    for i in range(first, first + n):
        sl.log_records.append(logs_pb2.LogRecord(
            body=common_pb2.AnyValue(string_value=NORMAL_MESSAGES[i % 5] + " " * padding),
            trace_id=(i // 5 + 1).to_bytes(16, "big"), span_id=b"\x02" * 8,
            attributes=[common_pb2.KeyValue(key="test.id", value=common_pb2.AnyValue(int_value=i))],
        ))
    return req.SerializeToString()


async def send_grpc(sidecar: Any, body: bytes) -> tuple[grpc.StatusCode, Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ports['grpc']}") as channel:
        try:
            await channel.unary_unary(LOGS_EXPORT_METHOD)(body, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.trailing_metadata()
        return grpc.StatusCode.OK, None


async def send_http(sidecar: Any, body: bytes) -> tuple[int, str | None]:
    async with aiohttp.ClientSession() as session, session.post(
        f"http://127.0.0.1:{sidecar.ports['http']}/v1/logs", data=body,
        headers={"Content-Type": "application/x-protobuf"},
    ) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


def ids_and_attributes(sink: OtlpSink) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for _, _, record in sink.records():
        attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in record.attributes}
        out.append((attrs["test.id"], attrs))
    return out


def test_records_undelivered_at_shutdown_stay_on_disk_and_the_next_start_delivers_them(
    rule_bundle: Path, tmp_path: Path
) -> None:
    sink = OtlpSink()  # not started: the downstream is down
    config = sidecar_config(
        sink.endpoint, rule_bundle, forward={"endpoint": sink.endpoint, "drain_timeout_s": 0.3},
        persistence={"directory": str(tmp_path / "queue")},
    )

    async def first_run() -> None:
        async with running_sidecar(config) as sidecar:
            assert (await send_grpc(sidecar, request(0, 40)))[0] == grpc.StatusCode.OK
            assert (await send_http(sidecar, request(40, 20)))[0] == 200

    asyncio.run(first_run())
    sink.start()
    try:
        async def second_run() -> list[tuple[int, dict[str, Any]]]:
            async with running_sidecar(config):
                await asyncio.to_thread(sink.wait_for_records, 60)
            return ids_and_attributes(sink)

        delivered = asyncio.run(second_run())
    finally:
        sink.stop()
    assert sorted(i for i, _ in delivered) == list(range(60))
    assert {(a["log.anomaly.status"], a["log.anomaly.reason"]) for _, a in delivered} == {("scored", "restart")}


def test_a_full_log_is_back_pressure_on_both_protocols_until_deliveries_make_room(
    rule_bundle: Path, tmp_path: Path
) -> None:
    sink = OtlpSink()  # down at first: nothing is delivered, so the log only grows
    config = sidecar_config(
        sink.endpoint, rule_bundle,
        persistence={"directory": str(tmp_path / "queue"), "max_bytes": 64 << 10, "segment_bytes": 16 << 10},
    )

    async def scenario() -> dict[str, Any]:
        async with running_sidecar(config) as sidecar:
            accepted, first = 0, 0
            while True:
                code, trailers = await send_grpc(sidecar, request(first, 10, padding=200))
                if code != grpc.StatusCode.OK:
                    break
                accepted += 10
                first += 10
                assert accepted < 1000, "never refused"
            http = await send_http(sidecar, request(first, 10, padding=200))
            await asyncio.to_thread(sink.start)
            await asyncio.to_thread(sink.wait_for_records, accepted)
            for _ in range(100):  # delivered entries leave the log, so requests are taken again
                if (await send_grpc(sidecar, request(5000, 10)))[0] == grpc.StatusCode.OK:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("still refused after delivery")
            await asyncio.to_thread(sink.wait_for_records, accepted + 10)
            return {"accepted": accepted, "code": code, "delay": retry_info_delay(trailers), "http": http}

    try:
        out = asyncio.run(scenario())
    finally:
        sink.stop()
    assert out["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED and out["delay"] is not None
    assert out["http"] == (503, "1")
    ids = sorted(i for i, _ in ids_and_attributes(sink))
    assert ids == [*range(out["accepted"]), *range(5000, 5010)]  # every accepted record, none refused


def test_a_directory_another_sidecar_holds_is_refused_at_start(rule_bundle: Path, tmp_path: Path) -> None:
    config = sidecar_config("127.0.0.1:1", rule_bundle, persistence={"directory": str(tmp_path / "queue")})

    async def scenario() -> str:
        async with running_sidecar(config):
            second = Sidecar(config_from_dict(config, environ={}))
            try:
                await second.start()
            except Exception as exc:  # noqa: BLE001 - the message is what is checked
                return str(exc)
            finally:
                await second.stop()
        return ""

    assert "in use by another otel-logbert process" in asyncio.run(scenario())


def test_a_batch_sent_but_never_acknowledged_is_replayed_and_counted_as_possible_duplicates(
    rule_bundle: Path, tmp_path: Path
) -> None:
    """A downstream that takes the request but never answers (timeouts) until the stop: the batch
    stays in the log; the next start delivers it again and counts it (cause replay). The hung
    downstream did get it, so every record is a real duplicate, bounded by that one batch."""
    taken: list[bytes] = []

    async def hang(body: bytes, context: Any) -> bytes:
        taken.append(body)
        await asyncio.sleep(30)
        return b""

    sink = OtlpSink().start()
    queue = {"directory": str(tmp_path / "queue")}

    async def first_run() -> float:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(hang)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        endpoint = f"127.0.0.1:{port}"
        config = sidecar_config(endpoint, rule_bundle, persistence=queue,
                                forward={"endpoint": endpoint, "timeout_s": 0.3, "drain_timeout_s": 0.3})
        try:
            async with running_sidecar(config) as sidecar:
                assert (await send_grpc(sidecar, request(0, 20)))[0] == grpc.StatusCode.OK
                retried = 0.0
                for _ in range(200):  # until the first timeout's re-send went out
                    retried = prometheus_value(sidecar.metrics.prometheus_text().decode(),
                                               "otel_logbert_records_possible_duplicates_total", cause="retry")
                    if retried:
                        break
                    await asyncio.sleep(0.05)
                return retried
        finally:
            await server.stop(0)

    async def second_run() -> dict[str, float]:
        config = sidecar_config(sink.endpoint, rule_bundle, persistence=queue)
        async with running_sidecar(config) as sidecar:
            await asyncio.to_thread(sink.wait_for_records, 20)
            text = sidecar.metrics.prometheus_text().decode()
            return {name: prometheus_value(text, metric, **labels) for name, (metric, labels) in {
                "replay": ("otel_logbert_records_possible_duplicates_total", {"cause": "replay"}),
                "in_flight": ("otel_logbert_records_replayed_total", {"state": "in_flight"}),
                "held": ("otel_logbert_records_replayed_total", {"state": "held"}),
            }.items()}

    try:
        retried = asyncio.run(first_run())
        counts = asyncio.run(second_run())
    finally:
        sink.stop()
    first_ids = {kv.value.int_value for body in taken[:1]
                 for rl in logs_service_pb2.ExportLogsServiceRequest.FromString(body).resource_logs
                 for sl in rl.scope_logs for r in sl.log_records for kv in r.attributes if kv.key == "test.id"}
    assert first_ids == set(range(20))  # the hung downstream took the whole batch
    assert retried >= 20  # the re-sends after a timeout were counted in the first run
    assert sorted(i for i, _ in ids_and_attributes(sink)) == list(range(20))
    assert counts == {"replay": 20, "in_flight": 20, "held": 0}
