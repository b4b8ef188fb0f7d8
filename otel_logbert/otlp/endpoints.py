"""OTLP endpoint strings -> what the gRPC and HTTP clients take.

Every OTLP leg (logs forwarded, span events, the sidecar's own metrics) is configured with one
endpoint string: ``host:port``, ``http://host:port`` or ``https://host:port`` (HTTP may add a path).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``http://host:port`` / ``https://host:port`` / ``host:port`` -> (``host:port``, use TLS).
    Only ``https://`` means TLS; a path after the address is ignored (gRPC has none)."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.netloc, parts.scheme == "https"
    return endpoint, False


def http_url(endpoint: str, signal_path: str, tls: bool = False) -> str:
    """The OTLP/HTTP URL of one signal: ``endpoint`` (given no scheme: ``https://`` when ``tls``, else
    ``http://``) with ``signal_path`` (``/v1/logs``, ``/v1/traces``, ``/v1/metrics``) appended unless it
    already ends with it."""
    scheme = "https" if tls else "http"
    base = (endpoint if "://" in endpoint else f"{scheme}://{endpoint}").rstrip("/")
    return base if base.endswith(signal_path) else base + signal_path
