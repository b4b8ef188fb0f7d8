"""TLS, mTLS, certificate rotation and bearer tokens on real ports, with real certificates.

The clients are opentelemetry-sdk's own OTLP log exporters (gRPC and HTTP), configured with TLS files
and headers as an application would; the downstream is the tests' OtlpSink over TLS. Certificates
are made in each test (``tests.tls_certs``). The sidecar runs in-process; the SDK exporters block,
so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource

from otel_logbert.errors import UserError
from tests.conftest import OtlpSink, prometheus_value, running_sidecar, sidecar_config
from tests.tls_certs import Authority, Issued

pytestmark = pytest.mark.integration

TIMEOUT_S = 3.0  # SDK exporters retry transient failures (a refused handshake) for this long


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on some machines, this one included) win
    over a session's ``verify``, which is where the SDK's HTTP exporter puts ``certificate_file``."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def record(body: str) -> ReadableLogRecord:
    return ReadableLogRecord(log_record=LogRecord(timestamp=time.time_ns(), body=body), resource=Resource({}))


def grpc_send(port: int, body: str, ca: Path | None = None, client: Issued | None = None,
              headers: dict[str, str] | None = None, plaintext: bool = False) -> bool:
    """One record through the SDK's OTLP/gRPC log exporter; whether it was acknowledged."""
    if plaintext:
        exporter = GrpcLogExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, headers=headers,
                                   timeout=TIMEOUT_S)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes() if ca else None,
            private_key=client.key_file.read_bytes() if client else None,
            certificate_chain=client.cert_file.read_bytes() if client else None,
        )
        exporter = GrpcLogExporter(endpoint=f"https://127.0.0.1:{port}", credentials=credentials,
                                   headers=headers, timeout=TIMEOUT_S)
    try:
        return exporter.export([record(body)]) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()


def http_send(port: int, body: str, ca: Path | None = None, client: Issued | None = None,
              headers: dict[str, str] | None = None, plaintext: bool = False) -> bool:
    """One record through the SDK's OTLP/HTTP log exporter; whether it was acknowledged."""
    scheme = "http" if plaintext else "https"
    exporter = HttpLogExporter(
        endpoint=f"{scheme}://127.0.0.1:{port}/v1/logs", headers=headers, timeout=TIMEOUT_S,
        certificate_file=str(ca) if ca else None,
        client_certificate_file=str(client.cert_file) if client else None,
        client_key_file=str(client.key_file) if client else None,
    )
    try:
        return exporter.export([record(body)]) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()


def send(protocol: str, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(grpc_send if protocol == "grpc" else http_send, *args, **kwargs)


def tls_receivers(server: Issued, client_ca: Path | None = None, **extra: Any) -> dict[str, Any]:
    tls = {"cert_file": str(server.cert_file), "key_file": str(server.key_file),
           "client_ca_file": str(client_ca) if client_ca else None}
    return {"grpc": {"endpoint": "127.0.0.1:0", "tls": tls}, "http": {"endpoint": "127.0.0.1:0", "tls": dict(tls)},
            **extra}


def replace_file(source: Path, target: Path) -> None:
    """Replace ``target`` in one step, as Kubernetes and cert-manager do (a rename)."""
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def test_mtls_on_both_receivers_accepts_only_certificates_of_the_client_ca(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path
) -> None:
    ca, foreign = Authority(tmp_path, "ca"), Authority(tmp_path / "foreign", "foreign")
    server = ca.issue("server", server=True)
    client = ca.issue("client", server=False)
    expired = ca.issue("expired", server=False, expired=True)
    stranger = foreign.issue("stranger", server=False)
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=tls_receivers(server, ca.cert_file))

    async def scenario(sidecar: Any) -> dict[str, bool]:
        out = {}
        for protocol in ("grpc", "http"):
            port = sidecar.ports[protocol]
            out[f"{protocol} client"] = await send(protocol, port, f"{protocol} ok", ca.cert_file, client)
            out[f"{protocol} no cert"] = await send(protocol, port, "x", ca.cert_file)
            out[f"{protocol} expired"] = await send(protocol, port, "x", ca.cert_file, expired)
            out[f"{protocol} foreign"] = await send(protocol, port, "x", ca.cert_file, stranger)
            out[f"{protocol} plaintext"] = await send(protocol, port, "x", plaintext=True)
            out[f"{protocol} client again"] = await send(protocol, port, f"{protocol} ok", ca.cert_file, client)
        await asyncio.to_thread(otlp_sink.wait_for_records, 4)
        return out

    out = run(config, scenario)
    for protocol in ("grpc", "http"):
        assert out[f"{protocol} client"] and out[f"{protocol} client again"]
        for refused in ("no cert", "expired", "foreign", "plaintext"):
            assert not out[f"{protocol} {refused}"], f"{protocol}: {refused} was accepted"
    assert sorted(r.body.string_value for _, _, r in otlp_sink.records()) == ["grpc ok"] * 2 + ["http ok"] * 2


def test_rotated_server_certificate_is_served_without_restart(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path
) -> None:
    """The files are replaced by a certificate of another CA: a client trusting only the new CA fails
    before and succeeds after, on both receivers, with no restart."""
    old_ca, new_ca = Authority(tmp_path / "old", "old"), Authority(tmp_path / "new", "new")
    old, new = old_ca.issue("server", server=True), new_ca.issue("server", server=True)
    live = Issued(tmp_path / "tls.crt", tmp_path / "tls.key")
    replace_file(old.cert_file, live.cert_file)
    replace_file(old.key_file, live.key_file)
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=tls_receivers(live))

    async def scenario(sidecar: Any) -> dict[str, bool]:
        out = {}
        for protocol in ("grpc", "http"):
            port = sidecar.ports[protocol]
            out[f"{protocol} old ca before"] = await send(protocol, port, "before", old_ca.cert_file)
            out[f"{protocol} new ca before"] = await send(protocol, port, "x", new_ca.cert_file)
        replace_file(new.key_file, live.key_file)
        replace_file(new.cert_file, live.cert_file)
        for protocol in ("grpc", "http"):
            port = sidecar.ports[protocol]
            out[f"{protocol} new ca after"] = await send(protocol, port, "after", new_ca.cert_file)
            out[f"{protocol} old ca after"] = await send(protocol, port, "x", old_ca.cert_file)
        await asyncio.to_thread(otlp_sink.wait_for_records, 4)
        return out

    out = run(config, scenario)
    for protocol in ("grpc", "http"):
        assert out[f"{protocol} old ca before"] and not out[f"{protocol} new ca before"], protocol
        assert out[f"{protocol} new ca after"] and not out[f"{protocol} old ca after"], protocol


def test_broken_rotation_keeps_serving_the_previous_certificate(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path
) -> None:
    ca, other = Authority(tmp_path, "ca"), Authority(tmp_path / "other", "other")
    server, mismatched = ca.issue("server", server=True), other.issue("server", server=True)
    live = Issued(tmp_path / "tls.crt", tmp_path / "tls.key")
    replace_file(server.cert_file, live.cert_file)
    replace_file(server.key_file, live.key_file)
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=tls_receivers(live))

    async def scenario(sidecar: Any) -> list[bool]:
        replace_file(mismatched.cert_file, live.cert_file)  # the key no longer matches the certificate
        return [await send(p, sidecar.ports[p], "still", ca.cert_file) for p in ("grpc", "http")]

    assert run(config, scenario) == [True, True]


def test_tls_13_minimum_on_http_and_refused_for_grpc(otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path) -> None:
    ca = Authority(tmp_path, "ca")
    server = ca.issue("server", server=True)
    receivers = tls_receivers(server)
    receivers["http"]["tls"]["min_version"] = "1.3"
    receivers["grpc"] = {"endpoint": None}
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=receivers)

    def handshake(port: int, max_version: ssl.TLSVersion) -> str:
        context = ssl.create_default_context(cafile=str(ca.cert_file))
        context.maximum_version = max_version
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.version() or ""
            except ssl.SSLError as exc:
                return f"refused: {exc.reason}"

    async def scenario(sidecar: Any) -> tuple[str, str]:
        port = sidecar.ports["http"]
        return (await asyncio.to_thread(handshake, port, ssl.TLSVersion.TLSv1_2),
                await asyncio.to_thread(handshake, port, ssl.TLSVersion.TLSv1_3))

    tls12, tls13 = run(config, scenario)
    assert tls12.startswith("refused") and tls13 == "TLSv1.3"

    receivers = tls_receivers(server)
    receivers["grpc"]["tls"]["min_version"] = "1.3"
    with pytest.raises(UserError, match=r"receivers.grpc.tls.min_version: grpcio cannot require TLS 1.3"):
        run(sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=receivers), lambda sidecar: asyncio.sleep(0))


def test_bad_tls_files_fail_at_start_naming_the_key(otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path) -> None:
    ca = Authority(tmp_path, "ca")
    server = ca.issue("server", server=True)
    receivers = tls_receivers(Issued(server.cert_file, tmp_path / "missing-key.pem"))
    with pytest.raises(UserError, match=r"^receivers.grpc.tls: cannot load cert_file .* with key_file"):
        run(sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=receivers), lambda sidecar: asyncio.sleep(0))


def https_status(port: int, path: str, ca: Path | None) -> int | str:
    """GET ``path`` on the telemetry port: the HTTP status, or the name of the error (handshake refused,
    plaintext against TLS). ``ca`` None: plain http://."""
    import urllib.error
    import urllib.request

    scheme = "http" if ca is None else "https"
    context = None if ca is None else ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", context=context, timeout=3) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError, OSError) as exc:
        return type(exc).__name__


def test_telemetry_port_serves_https_and_picks_up_a_rotated_certificate(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path
) -> None:
    """telemetry.tls: /healthz, /readyz and /metrics over HTTPS only; the files replaced by a certificate
    of another CA are served on the next connection, with no restart."""
    old_ca, new_ca = Authority(tmp_path / "old", "old"), Authority(tmp_path / "new", "new")
    old, new = old_ca.issue("server", server=True), new_ca.issue("server", server=True)
    live = Issued(tmp_path / "tls.crt", tmp_path / "tls.key")
    replace_file(old.cert_file, live.cert_file)
    replace_file(old.key_file, live.key_file)
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, telemetry={
        "endpoint": "127.0.0.1:0", "log_format": "text",
        "tls": {"cert_file": str(live.cert_file), "key_file": str(live.key_file)}})

    async def scenario(sidecar: Any) -> dict[str, Any]:
        port = sidecar.ports["telemetry"]
        out = {path: await asyncio.to_thread(https_status, port, path, old_ca.cert_file)
               for path in ("/healthz", "/readyz", "/metrics")}
        out["new ca before"] = await asyncio.to_thread(https_status, port, "/healthz", new_ca.cert_file)
        out["plaintext"] = await asyncio.to_thread(https_status, port, "/healthz", None)
        replace_file(new.key_file, live.key_file)
        replace_file(new.cert_file, live.cert_file)
        out["new ca after"] = await asyncio.to_thread(https_status, port, "/healthz", new_ca.cert_file)
        out["old ca after"] = await asyncio.to_thread(https_status, port, "/healthz", old_ca.cert_file)
        return out

    out = run(config, scenario)
    assert out["/healthz"] == out["/readyz"] == out["/metrics"] == 200, out
    assert out["new ca before"] == "URLError" and out["plaintext"] != 200, out
    assert out["new ca after"] == 200 and out["old ca after"] == "URLError", out


def test_bad_telemetry_tls_files_fail_at_start_naming_the_key(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path
) -> None:
    server = Authority(tmp_path, "ca").issue("server", server=True)
    telemetry = {"endpoint": "127.0.0.1:0", "tls": {"cert_file": str(server.cert_file),
                                                   "key_file": str(tmp_path / "missing-key.pem")}}
    with pytest.raises(UserError, match=r"^telemetry.tls: cannot load cert_file .* with key_file"):
        run(sidecar_config(otlp_sink.endpoint, rule_bundle, telemetry=telemetry), lambda sidecar: asyncio.sleep(0))


def test_bearer_token_on_both_receivers(
    otlp_sink: OtlpSink, rule_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-1\n")
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"},
        "auth": {"token_file": str(token_file)}})
    good = {"authorization": "Bearer s3cret-token-1"}

    async def scenario(sidecar: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for protocol in ("grpc", "http"):
            port = sidecar.ports[protocol]
            out[f"{protocol} good"] = await send(protocol, port, f"{protocol} 1", headers=good, plaintext=True)
            out[f"{protocol} wrong"] = await send(protocol, port, "x", headers={"authorization": "Bearer nope"},
                                                  plaintext=True)
            out[f"{protocol} missing"] = await send(protocol, port, "x", plaintext=True)
            basic = {"authorization": "Basic s3cret-token-1"}
            out[f"{protocol} scheme"] = await send(protocol, port, "x", headers=basic, plaintext=True)
        token_file.write_text("s3cret-token-2")  # rotated: picked up within a second
        await asyncio.sleep(1.1)
        for protocol in ("grpc", "http"):
            port = sidecar.ports[protocol]
            out[f"{protocol} old"] = await send(protocol, port, "x", headers=good, plaintext=True)
            out[f"{protocol} new"] = await send(protocol, port, f"{protocol} 2", plaintext=True,
                                                headers={"authorization": "bearer s3cret-token-2"})
        await asyncio.to_thread(otlp_sink.wait_for_records, 4)
        out["metrics"] = sidecar.metrics.prometheus_text().decode()
        return out

    with caplog.at_level(logging.DEBUG):
        out = run(config, scenario)
    for protocol in ("grpc", "http"):
        assert out[f"{protocol} good"] and out[f"{protocol} new"], protocol
        for refused in ("wrong", "missing", "scheme", "old"):
            assert not out[f"{protocol} {refused}"], f"{protocol}: {refused} token accepted"
        assert prometheus_value(out["metrics"], "otel_logbert_requests_refused_total", protocol=protocol,
                                reason="unauthenticated") == 4
    assert sorted(r.body.string_value for _, _, r in otlp_sink.records()) == ["grpc 1", "grpc 2", "http 1", "http 2"]
    assert "s3cret" not in caplog.text


def test_bearer_token_from_environment(otlp_sink: OtlpSink, rule_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OTLP_TOKEN", "env-token")
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers={
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": None}, "auth": {"token_env": "TEST_OTLP_TOKEN"}})

    async def scenario(sidecar: Any) -> tuple[bool, bool]:
        port = sidecar.ports["grpc"]
        return (await send("grpc", port, "env", headers={"authorization": "Bearer env-token"}, plaintext=True),
                await send("grpc", port, "x", headers={"authorization": "Bearer other"}, plaintext=True))

    assert run(config, scenario) == (True, False)
    monkeypatch.delenv("TEST_OTLP_TOKEN")
    with pytest.raises(UserError, match="TEST_OTLP_TOKEN is not set or empty"):
        run(config, lambda sidecar: asyncio.sleep(0))


def test_forwarder_and_spans_over_mtls_to_a_real_otlp_receiver(rule_bundle: Path, tmp_path: Path) -> None:
    """forward.tls: CA, client certificate and server_name_override against an OtlpSink that requires
    client certificates; spans (``traces``) and OTLP metrics follow forward.tls. Without the client certificate
    nothing is delivered and /readyz says why."""
    ca = Authority(tmp_path, "ca")
    sink_cert = ca.issue("sink", server=True, hosts=("otel-sink.test",))  # not 127.0.0.1: needs the override
    client = ca.issue("sidecar", server=False)
    credentials = grpc.ssl_server_credentials(
        [(sink_cert.key_file.read_bytes(), sink_cert.cert_file.read_bytes())],
        root_certificates=ca.cert_file.read_bytes(), require_client_auth=True)
    sink = OtlpSink(server_credentials=credentials).start()
    endpoint = f"https://127.0.0.1:{sink.port}"
    tls = {"ca_file": str(ca.cert_file), "cert_file": str(client.cert_file), "key_file": str(client.key_file),
           "server_name_override": "otel-sink.test"}
    trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")

    async def deliver(sidecar: Any) -> None:
        from tests.unit.test_sidecar_receiver import grpc_export, request

        await grpc_export(sidecar, request(3, "user 42 logged in from 10.1.2.3", trace_id=trace_id))
        await asyncio.to_thread(sink.wait_for_records, 3)
        await asyncio.to_thread(sink.wait_for_spans, 1)

    async def without_cert(sidecar: Any) -> str:
        from tests.unit.test_sidecar_receiver import grpc_export, request

        await grpc_export(sidecar, request(1, "lost?"))
        deadline = time.monotonic() + 10
        while not sidecar.pipeline.forwarder.last_error and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return sidecar.ready()[1]

    try:
        metrics = {"otlp_metrics": {"enabled": True, "interval_s": 0.2}}
        run(sidecar_config(endpoint, rule_bundle, forward={"endpoint": endpoint, "tls": tls}, telemetry=metrics),
            deliver)
        assert len(sink.records()) == 3 and len(sink.spans()) >= 1
        assert sink.metrics, "no OTLP metrics arrived over mTLS"
        no_cert = {"ca_file": str(ca.cert_file), "server_name_override": "otel-sink.test"}
        config = sidecar_config(endpoint, rule_bundle, traces={"enabled": False}, forward={
            "endpoint": endpoint, "tls": no_cert, "drain_timeout_s": 0.2, "timeout_s": 1})
        why = run(config, without_cert)
        assert why.startswith("downstream failing: UNAVAILABLE"), why
        assert len(sink.records()) == 3
    finally:
        sink.stop()


def run(config: dict[str, Any], scenario: Any) -> Any:
    async def main() -> Any:
        async with running_sidecar(config) as sidecar:
            return await scenario(sidecar)

    return asyncio.run(main())


def test_triton_client_speaks_tls_with_its_files(rule_bundle: Path, tmp_path: Path) -> None:
    """scoring.triton.tls reaches tritonclient: against a TLS gRPC server that requires a client
    certificate (an OtlpSink: it serves no Triton API), the handshake succeeds and the call fails
    with UNIMPLEMENTED; without the TLS options it never gets past the transport (UNAVAILABLE)."""
    from otel_logbert.bundle import load_bundle
    from otel_logbert.config import TlsClientConfig
    from otel_logbert.otlp.tls import ClientTls
    from otel_logbert.scoring.triton import TritonScorer, tls_client_options

    ca = Authority(tmp_path, "ca")
    server, client = ca.issue("triton", server=True, hosts=("triton.test",)), ca.issue("sidecar", server=False)
    credentials = grpc.ssl_server_credentials([(server.key_file.read_bytes(), server.cert_file.read_bytes())],
                                              root_certificates=ca.cert_file.read_bytes(), require_client_auth=True)
    sink = OtlpSink(server_credentials=credentials).start()
    url = f"127.0.0.1:{sink.port}"
    tls = ClientTls(TlsClientConfig(ca_file=str(ca.cert_file), cert_file=str(client.cert_file),
                                    key_file=str(client.key_file), server_name_override="triton.test"), url, "t")
    bundle = load_bundle(rule_bundle, require_onnx=False)

    def live_status(options: dict[str, Any]) -> str:
        scorer = TritonScorer(bundle, url=url, client_options=options)
        try:
            scorer._get_client().is_server_live(client_timeout=3)
            return "live"
        except Exception as exc:  # tritonclient's InferenceServerException carries the gRPC status
            return str(getattr(exc, "status", lambda: "")() or exc)
        finally:
            scorer.close()

    try:
        assert "UNIMPLEMENTED" in live_status(tls_client_options(tls))
        assert "UNAVAILABLE" in live_status({})
    finally:
        sink.stop()
