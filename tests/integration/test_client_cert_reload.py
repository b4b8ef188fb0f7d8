"""Client certificates rotated under a running sidecar (cert-manager style: files replaced by a rename).

The downstream is a real OTLP/gRPC receiver that requires client certificates and trusts two client
CAs; it records the common name of the certificate each call came with. The client files are
rotated from a certificate of the first CA to one of a second CA; delivery goes on, and the receiver
sees the new certificate on logs (forwarder), spans, OTLP metrics and Triton calls, without a restart.
The HTTP forwarder is shown against an aiohttp server that requires client certificates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from otel_logbert.config import TlsClientConfig
from otel_logbert.otlp.tls import ClientTls
from tests.conftest import OtlpSink, running_sidecar, sidecar_config
from tests.tls_certs import Authority, Issued

pytestmark = pytest.mark.integration

SERVER_NAME = "otel-sink.test"


def replace_file(source: Path, target: Path) -> None:
    """Replace ``target`` in one step, as Kubernetes and cert-manager do (a rename)."""
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def install(issued: Issued, live: Issued) -> None:
    replace_file(issued.key_file, live.key_file)
    replace_file(issued.cert_file, live.cert_file)


class _Peers(grpc.ServerInterceptor):
    """Records (method, client certificate common name) of every unary call."""

    def __init__(self, owner: PeerSink) -> None:
        self.owner = owner

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, owner = handler.unary_unary, self.owner

        def recorded(request: Any, context: grpc.ServicerContext) -> Any:
            names = context.auth_context().get("x509_common_name") or [b""]
            with owner._changed:
                owner.peers.append((details.method.rsplit("/", 2)[-2], names[0].decode()))
                owner._changed.notify_all()
            return inner(request, context)

        return handler._replace(unary_unary=recorded)


class PeerSink(OtlpSink):
    """An ``OtlpSink`` over mTLS that records the client certificate of each call, and answers
    Triton's ``ServerLive`` (true)."""

    def __init__(self, server_credentials: grpc.ServerCredentials) -> None:
        super().__init__(server_credentials=server_credentials)
        self.peers: list[tuple[str, str]] = []

    def start(self) -> PeerSink:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[_Peers(self)])
        self._register(server)
        self.port = self._bind(server, f"{self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def _register(self, server: grpc.Server) -> None:
        super()._register(server)
        try:
            from tritonclient.grpc import service_pb2
        except ImportError:  # the triton extra is not installed: only the Triton test needs it
            return

        live = grpc.unary_unary_rpc_method_handler(
            lambda request, context: service_pb2.ServerLiveResponse(live=True),
            request_deserializer=service_pb2.ServerLiveRequest.FromString,
            response_serializer=service_pb2.ServerLiveResponse.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ServerLive": live}),))

    def wait_for_peer(self, service: str, name: str, timeout_s: float = 15.0) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: any(p == (service, name) for p in self.peers[-20:]),
                                        timeout=timeout_s)
        assert ok, f"no {service} call with certificate {name}: {self.peers[-10:]}"

    def names(self, service: str) -> list[str]:
        with self._changed:
            return [name for s, name in self.peers if s.endswith(service)]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A server CA and certificate, two client CAs with one client certificate each, and the live
    client files (holding the first client certificate)."""
    server_ca, ca1, ca2 = Authority(tmp_path, "server"), Authority(tmp_path / "one", "one"), Authority(
        tmp_path / "two", "two")
    live = Issued(tmp_path / "client" / "tls.crt", tmp_path / "client" / "tls.key")
    live.cert_file.parent.mkdir()
    out = {"server_ca": server_ca, "server": server_ca.issue("sink", server=True, hosts=(SERVER_NAME,)),
           "first": ca1.issue("sidecar-1", server=False), "second": ca2.issue("sidecar-2", server=False),
           "client_cas": ca1.cert_file.read_bytes() + ca2.cert_file.read_bytes(), "live": live}
    install(out["first"], live)
    return out


def peer_sink(pki: dict[str, Any]) -> PeerSink:
    server: Issued = pki["server"]
    credentials = grpc.ssl_server_credentials(
        [(server.key_file.read_bytes(), server.cert_file.read_bytes())],
        root_certificates=pki["client_cas"], require_client_auth=True)
    return PeerSink(credentials).start()


def client_tls(pki: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    live: Issued = pki["live"]
    return {"ca_file": str(pki["server_ca"].cert_file), "cert_file": str(live.cert_file),
            "key_file": str(live.key_file), "server_name_override": SERVER_NAME, **kwargs}


def test_forwarder_spans_and_metrics_pick_up_a_rotated_client_certificate(
    rule_bundle: Path, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    sink = peer_sink(pki)
    endpoint = f"https://127.0.0.1:{sink.port}"
    config = sidecar_config(endpoint, rule_bundle, forward={"endpoint": endpoint, "tls": client_tls(pki)},
                            telemetry={"otlp_metrics": {"enabled": True, "interval_s": 0.2}})
    services = ("LogsService", "TraceService", "MetricsService")

    async def scenario(sidecar: Any) -> None:
        from tests.unit.test_sidecar_receiver import grpc_export, request

        trace = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
        await grpc_export(sidecar, request(3, "user 42 logged in from 10.1.2.3", trace_id=trace))
        await asyncio.to_thread(sink.wait_for_records, 3)
        for service in services:
            await asyncio.to_thread(sink.wait_for_peer, f"opentelemetry.proto.collector.{_pkg(service)}.v1.{service}",
                                    "sidecar-1")
        install(pki["second"], pki["live"])  # a new certificate from a new CA (which the sink trusts)
        await asyncio.sleep(1.2)  # the files are compared at most once a second
        trace = bytes.fromhex("1af7651916cd43dd8448eb211c80319c")
        await grpc_export(sidecar, request(3, "user 43 logged in from 10.1.2.4", trace_id=trace))
        await asyncio.to_thread(sink.wait_for_records, 6)
        for service in services:
            await asyncio.to_thread(sink.wait_for_peer, f"opentelemetry.proto.collector.{_pkg(service)}.v1.{service}",
                                    "sidecar-2")

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(_with_sidecar(config, scenario))
        assert len(sink.records()) == 6
        for service in services:
            names = sink.names(service)
            assert names[0] == "sidecar-1" and names[-1] == "sidecar-2", (service, names)
            switched = names.index("sidecar-2")
            assert set(names[switched:]) == {"sidecar-2"}, (service, names)  # never back to the old one
        reloaded = [r for r in caplog.records if r.getMessage().startswith("client certificate reloaded")]
        assert reloaded and str(pki["live"].cert_file) in reloaded[0].getMessage()
        assert {getattr(r, "where", "") for r in reloaded} >= {"forward.tls"}
    finally:
        sink.stop()


def _pkg(service: str) -> str:
    return {"LogsService": "logs", "TraceService": "trace", "MetricsService": "metrics"}[service]


async def _with_sidecar(config: dict[str, Any], scenario: Any) -> Any:
    async with running_sidecar(config) as sidecar:
        return await scenario(sidecar)


def test_triton_client_picks_up_a_rotated_client_certificate(rule_bundle: Path, pki: dict[str, Any]) -> None:
    pytest.importorskip("tritonclient.grpc")
    from otel_logbert.bundle import load_bundle
    from otel_logbert.scoring.triton import TritonScorer

    sink = peer_sink(pki)
    tls = ClientTls(TlsClientConfig(**client_tls(pki)), f"127.0.0.1:{sink.port}", "scoring.triton.tls",
                    check_interval_s=0)
    scorer = TritonScorer(load_bundle(rule_bundle), url=f"127.0.0.1:{sink.port}", tls=tls)
    try:
        assert scorer._get_client().is_server_live(client_timeout=5)
        install(pki["second"], pki["live"])
        assert scorer._get_client().is_server_live(client_timeout=5)
        assert sink.names("GRPCInferenceService") == ["sidecar-1", "sidecar-2"]
    finally:
        scorer.close()
        sink.stop()


def test_http_forwarder_picks_up_a_rotated_client_certificate(pki: dict[str, Any]) -> None:
    from aiohttp import web

    from otel_logbert.otlp.forwarder import HttpLogsExporter

    server: Issued = pki["server"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert_file, server.key_file)
    context.load_verify_locations(cadata=pki["client_cas"].decode())
    context.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []

    async def logs(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(dict(x[0] for x in peer["subject"])["commonName"] if peer else "")
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def scenario() -> list[bool]:
        app = web.Application()
        app.router.add_post("/v1/logs", logs)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        tls = ClientTls(TlsClientConfig(**client_tls(pki)), f"https://127.0.0.1:{port}", "forward.tls",
                        check_interval_s=0)
        exporter = HttpLogsExporter(f"https://127.0.0.1:{port}", tls=tls)
        try:
            first = await exporter.export(b"", 5)
            install(pki["second"], pki["live"])
            second = await exporter.export(b"", 5)
            return [first.ok, second.ok]
        finally:
            await exporter.close()
            await runner.cleanup()

    started = time.monotonic()
    assert asyncio.run(scenario()) == [True, True]
    assert seen == ["sidecar-1", "sidecar-2"]
    assert time.monotonic() - started < 10


def test_client_files_are_checked_at_most_every_interval_and_a_broken_rotation_keeps_the_old_ones(
    pki: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = ClientTls(TlsClientConfig(**client_tls(pki)), "https://127.0.0.1:1", "forward.tls", check_interval_s=3600)
    first = tls.ssl_context()
    assert not tls.refresh()  # first check: nothing changed
    install(pki["second"], pki["live"])
    assert not tls.refresh() and tls.generation == 0  # within the interval: not looked at
    tls.check_interval_s = 0
    tls._next_check = 0
    assert tls.refresh() and tls.generation == 1 and tls.ssl_context() is not first
    second = tls.ssl_context()
    replace_file(pki["first"].cert_file, pki["live"].cert_file)  # the key no longer matches: half rotated
    with caplog.at_level(logging.WARNING):
        assert not tls.refresh()
    assert tls.generation == 1 and tls.ssl_context() is second
    assert "client TLS files changed but do not load" in caplog.text
    assert not tls.refresh()  # not retried until the files change again
