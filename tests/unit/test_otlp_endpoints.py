"""OTLP endpoint strings (otlp.endpoints): what the forwarder, span and metric exporters connect to."""

from __future__ import annotations

import pytest

from otel_logbert.otlp.endpoints import grpc_target, http_url
from otel_logbert.otlp.forwarder import GrpcLogsExporter, HttpLogsExporter


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("http://collector:4317", ("collector:4317", False)),
    ("https://collector:4317", ("collector:4317", True)),
    ("collector:4317", ("collector:4317", False)),
    ("http://collector:4317/", ("collector:4317", False)),
])
def test_grpc_target(endpoint: str, expected: tuple[str, bool]) -> None:
    assert grpc_target(endpoint) == expected


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("collector:4318", "http://collector:4318/v1/logs"),
    ("https://collector:4318/", "https://collector:4318/v1/logs"),
    ("http://gw/otlp", "http://gw/otlp/v1/logs"),
    ("http://gw/otlp/v1/logs", "http://gw/otlp/v1/logs"),
])
def test_http_url(endpoint: str, expected: str) -> None:
    assert http_url(endpoint, "/v1/logs") == expected


def test_the_log_exporters_use_them() -> None:
    grpc = GrpcLogsExporter("https://collector:4317")
    assert (grpc.target, grpc.tls) == ("collector:4317", True)
    assert HttpLogsExporter("collector:4318").url == "http://collector:4318/v1/logs"



def test_http_url_without_a_scheme_follows_tls() -> None:
    assert http_url("collector:4318", "/v1/traces", tls=True) == "https://collector:4318/v1/traces"
    assert http_url("http://collector:4318", "/v1/traces", tls=True) == "http://collector:4318/v1/traces"
