"""The sidecar's typed configuration: YAML -> dataclasses, environment overrides, validation.

The dataclasses below are the YAML contract and the only place its defaults live: section ->
``Section`` dataclass, key -> field (built with ``option``: default, description, optional ``Check``).
``docs/sidecar-config.md``'s key table and YAML skeleton are generated from them
(``python -m otel_logbert.config_docs``). Each section validates itself (``Section.validate(path)``:
the declared checks, then its cross-key rules); ``SidecarConfig.validate`` adds the rules that span
sections. ``load_config`` is the only entry point the sidecar needs:

    config = load_config("sidecar.yaml")          # raises ConfigError (a UserError) on any problem

Environment overrides: every leaf key can be set as ``OTEL_LOGBERT_<PATH>`` where ``<PATH>`` is the
dotted YAML path upper-cased with dots as underscores (``scoring.bundle`` ->
``OTEL_LOGBERT_SCORING_BUNDLE``, ``receivers.grpc.endpoint`` -> ``OTEL_LOGBERT_RECEIVERS_GRPC_ENDPOINT``).
Values are read as YAML scalars/flow collections (``"30"`` -> 30, ``"null"`` -> None, ``"[a, b]"`` ->
a list). An ``OTEL_LOGBERT_<SECTION>_...`` variable that names no key is an error, so typos surface.

Errors name the offending key by its dotted path and, for unknown keys, suggest the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

import yaml

from otel_logbert.errors import UserError
from otel_logbert.scoring.cache import DEFAULT_CACHE_ENTRIES

ENV_PREFIX = "OTEL_LOGBERT_"
MiB = 1024 * 1024


class ConfigError(UserError):
    """The configuration is invalid; the message names the key (dotted path) and what is wrong."""


# --- field checks (declared per key in the dataclasses below; run by ``Section.validate``) ----------

_ENDPOINT = re.compile(r"^\[?[0-9A-Za-z.:_-]*\]?:\d{1,5}$")
SESSION_KEYS = ("trace_id", "attributes", "regex", "window")
SESSION_ORDERS = ("time", "arrival")
PROTOCOLS = ("grpc", "http")


class Check:
    """A one-key check: ``check(path, value)`` raises ``ConfigError`` naming ``path``; ``str(check)``
    is what the generated docs show in the type column. ``None`` values (unset optional keys) pass."""

    def __call__(self, path: str, value: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class OneOf(Check):
    choices: tuple[str, ...]

    def __call__(self, path: str, value: Any) -> None:
        if value is not None and value not in self.choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(self.choices)}")

    def __str__(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class Positive(Check):
    allow_zero: bool = False

    def __call__(self, path: str, value: Any) -> None:
        if value is not None and (value < 0 or (value == 0 and not self.allow_zero)):
            raise ConfigError(f"{path}: must be {'>= 0' if self.allow_zero else '> 0'}, got {value}")

    def __str__(self) -> str:
        return ">= 0" if self.allow_zero else "> 0"


@dataclass(frozen=True)
class HostPort(Check):
    def __call__(self, path: str, value: Any) -> None:
        if value is not None and not _ENDPOINT.match(value):
            raise ConfigError(f"{path}: expected host:port, got {value!r}")

    def __str__(self) -> str:
        return "host:port"


@dataclass(frozen=True)
class NonEmpty(Check):
    def __call__(self, path: str, value: Any) -> None:
        if not value:
            raise ConfigError(f"{path}: must be set")

    def __str__(self) -> str:
        return "non-empty"


@dataclass(frozen=True)
class ClientEndpoint(Check):
    """An endpoint the sidecar connects to: ``host:port`` or ``http(s)://host:port[/path]``. Credentials
    in it are refused without repeating them (they would be logged with the endpoint)."""

    def __call__(self, path: str, value: Any) -> None:
        if value is None:
            return
        if not value:
            raise ConfigError(f"{path}: must be set")
        parts = urlsplit(value if "://" in value else f"//{value}")
        if "@" in parts.netloc:
            raise ConfigError(
                f"{path}: credentials in the URL are refused (they would be written to logs); send them in "
                "a header (forward.headers, from an environment variable) or use a TLS client certificate"
            )
        if "://" in value and parts.scheme not in ("http", "https"):
            raise ConfigError(f"{path}: scheme {parts.scheme!r} is not http or https")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ConfigError(f"{path}: expected host:port or http(s)://host:port, got {value!r}")

    def __str__(self) -> str:
        return "host:port or http(s)://host:port, no credentials"


def option(default: Any = dataclasses.MISSING, *, doc: str, check: Check | None = None,
        factory: Callable[[], Any] | None = None, example: Any = None) -> Any:
    """A config key: its default (or ``factory`` for lists and mappings), the description the docs
    show, an optional ``Check``, and an ``example`` value for the docs' YAML skeleton where the
    default is not a useful one."""
    metadata = {"doc": doc, "check": check, "example": example}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, doc: str) -> Any:
    """A nested section (a ``Section`` dataclass) with the description the docs show."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


class Section:
    """Base of every section dataclass. ``validate(path)`` runs each key's declared ``Check`` and
    validates nested sections (``path`` is the section's dotted YAML path, "" at the top); sections
    with cross-key rules override it, calling ``super().validate(path)`` first. Raises ``ConfigError``."""

    def validate(self, path: str) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            where = _join(path, f.name)
            if isinstance(value, Section):
                value.validate(where)
            elif f.metadata.get("check") is not None:
                f.metadata["check"](where, value)


# --- sections ---------------------------------------------------------------------------------------

TLS_VERSIONS = ("1.2", "1.3")


@dataclass
class TlsServerConfig(Section):
    """A listening port's TLS, as the Collector's configtls server settings (docs/security.md)."""

    cert_file: str | None = option(None, doc="PEM certificate chain the port presents; set = TLS on")
    key_file: str | None = option(None, doc="PEM private key of `cert_file`")
    client_ca_file: str | None = option(
        None, doc="PEM CA(s); set = mTLS: clients must present a certificate one of them signed"
    )
    min_version: str = option("1.2", check=OneOf(TLS_VERSIONS), doc="lowest TLS version (gRPC: 1.2 only)")

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.cert_file is None:
            for name in ("key_file", "client_ca_file"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{path}.{name}: needs cert_file (TLS is on when cert_file is set)")
        elif self.key_file is None:
            raise ConfigError(f"{path}.key_file: required with cert_file")


@dataclass
class TlsClientConfig(Section):
    """A client's TLS, as the Collector's configtls client settings (docs/security.md)."""

    ca_file: str | None = option(None, doc="PEM CA(s) the server is verified against; null: the system's")
    cert_file: str | None = option(
        None, doc="client certificate (mTLS); rotated files are picked up without a restart (security.md)"
    )
    key_file: str | None = option(None, doc="private key of `cert_file`")
    server_name_override: str | None = option(None, doc="name the server's certificate is checked against")
    insecure: bool = option(False, doc="true: plaintext, no TLS (refused with `https://` or any file)")

    def validate(self, path: str) -> None:
        super().validate(path)
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(f"{path}: cert_file and key_file go together (a client certificate and its key)")
        if self.insecure and self.settings:
            raise ConfigError(f"{path}.insecure: true turns TLS off, but {self.settings[0]} is set")

    @property
    def settings(self) -> list[str]:
        """The TLS keys that are set."""
        return [name for name in ("ca_file", "cert_file", "key_file", "server_name_override") if getattr(self, name)]

    def check_endpoint(self, path: str, endpoint: str | None) -> None:
        """Rules between this TLS section (at ``path``) and the endpoint it goes with."""
        if endpoint is None:
            return
        if self.insecure and endpoint.startswith("https://"):
            raise ConfigError(f"{path}.insecure: true contradicts the https:// endpoint")
        if self.settings and endpoint.startswith("http://"):
            raise ConfigError(f"{path}.{self.settings[0]}: the endpoint's http:// means plaintext; use https://")


@dataclass
class AuthConfig(Section):
    """Bearer-token authentication of both receivers (the Collector's bearertokenauth extension)."""

    token_file: str | None = option(None, doc="file holding the token (re-read when it changes)")
    token_env: str | None = option(None, doc="or: the environment variable holding the token")
    scheme: str = option("Bearer", doc="`Authorization: <scheme> <token>`")

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.token_file and self.token_env:
            raise ConfigError(f"{path}: set token_file or token_env, not both")
        if not self.scheme.strip() or " " in self.scheme.strip():
            raise ConfigError(f"{path}.scheme: expected one word such as Bearer, got {self.scheme!r}")


@dataclass
class GrpcReceiverConfig(Section):
    endpoint: str | None = option(
        "0.0.0.0:4317", check=HostPort(), doc="OTLP/gRPC `LogsService/Export` listen address; null disables"
    )
    max_message_bytes: int = option(
        16 * MiB, check=Positive(), doc="largest request (after gzip decompression); larger: `RESOURCE_EXHAUSTED`"
    )
    max_concurrent_streams: int = option(
        100, check=Positive(), doc="calls open at once per connection (HTTP/2 streams); more wait in the "
        "client (flow control, nothing is refused)"
    )
    max_connections: int = option(
        1000, check=Positive(allow_zero=True), doc="connections open at once; more are closed by grpc (the "
        "client retries: UNAVAILABLE); with `max_concurrent_streams` it bounds what slow clients can hold; "
        "0 = unbounded"
    )
    max_concurrent_rpcs: int = option(
        0, check=Positive(allow_zero=True), doc="calls handled at once over all connections; more: "
        "`RESOURCE_EXHAUSTED` before the message is read, without a retry hint (a Collector does not "
        "retry it: prefer the two bounds above); 0 = unbounded"
    )
    idle_timeout_s: float = option(
        600.0, check=Positive(allow_zero=True), doc="a connection without calls for this long is closed "
        "(GOAWAY; the client reconnects when it next sends); 0 = never"
    )
    tls: TlsServerConfig = section(TlsServerConfig, "TLS of the gRPC port")


@dataclass
class HttpReceiverConfig(Section):
    endpoint: str | None = option(
        "0.0.0.0:4318",
        check=HostPort(),
        doc="OTLP/HTTP `POST /v1/logs` (protobuf, JSON, gzip) listen address; null disables",
    )
    max_body_bytes: int = option(
        16 * MiB, check=Positive(), doc="largest request body, on the wire and after decompression (gzip, "
        "deflate; inflated as it streams in, stopping at the limit); larger: 413"
    )
    max_connections: int = option(
        1000, check=Positive(allow_zero=True), doc="connections open at once; a new one past it is "
        "answered 503 with `Retry-After` and closed before it is read; 0 = unbounded"
    )
    idle_timeout_s: float = option(
        60.0, check=Positive(), doc="a connection that has not sent a whole request header this long "
        "after it opened or after its last answer is closed (slow headers, idle keep-alive)"
    )
    read_timeout_s: float = option(
        30.0, check=Positive(), doc="a request body not fully received this long after its header: 408, "
        "connection closed (a client trickling its body)"
    )
    tls: TlsServerConfig = section(TlsServerConfig, "TLS of the HTTP port")


@dataclass
class ReceiversConfig(Section):
    grpc: GrpcReceiverConfig = section(GrpcReceiverConfig, "OTLP/gRPC receiver")
    http: HttpReceiverConfig = section(HttpReceiverConfig, "OTLP/HTTP receiver")
    auth: AuthConfig = section(AuthConfig, "bearer token both receivers require (none when no source is set)")
    max_records_per_request: int = option(
        100_000, check=Positive(allow_zero=True),
        doc="log records per request; more: `RESOURCE_EXHAUSTED` / 413, not retried; 0 = unbounded",
    )
    max_attributes_per_record: int = option(
        1024, check=Positive(allow_zero=True),
        doc="attributes per record, per resource and per scope; more: `RESOURCE_EXHAUSTED` / 413; 0 = unbounded",
    )
    max_attribute_key_bytes: int = option(
        1024, check=Positive(allow_zero=True),
        doc="UTF-8 bytes of an attribute key (record, resource, scope); longer: `INVALID_ARGUMENT` / 400; "
        "0 = unbounded",
    )
    max_attribute_value_bytes: int = option(
        1024 * 1024, check=Positive(allow_zero=True),
        doc="bytes of an attribute value (string: UTF-8; array / kvlist: encoded total, nested included); "
        "larger: `INVALID_ARGUMENT` / 400; 0 = unbounded",
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.grpc.endpoint is None and self.http.endpoint is None:
            raise ConfigError(f"{path}: at least one of grpc.endpoint and http.endpoint must be set")


@dataclass
class RetryConfig(Section):
    initial_backoff_s: float = option(0.5, check=Positive(), doc="first retry delay (exponential backoff, jitter)")
    max_backoff_s: float = option(30.0, check=Positive(), doc="longest retry delay")
    max_elapsed_s: float = option(
        0.0,
        check=Positive(allow_zero=True),
        doc="0 = retry until delivered (the receivers push back instead); > 0: a batch still failing "
        "after this long is dropped and counted in `records_dropped`",
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.max_backoff_s < self.initial_backoff_s:
            raise ConfigError(f"{path}.max_backoff_s: must be >= initial_backoff_s")


@dataclass
class ForwardConfig(Section):
    endpoint: str = option(
        "http://127.0.0.1:14317",
        check=ClientEndpoint(),
        doc="where enriched logs go (the Collector's second receiver); `https://` = TLS",
    )
    protocol: str = option(
        "grpc", check=OneOf(PROTOCOLS), doc="`http` posts protobuf to `<endpoint>/v1/logs`"
    )
    timeout_s: float = option(10.0, check=Positive(), doc="per forwarded request")
    retry: RetryConfig = section(RetryConfig, "retries of retryable failures")
    queue_max_records: int = option(
        200_000, check=Positive(), doc="closed records not yet delivered; above it the receivers push back"
    )
    batch_max_records: int = option(8192, check=Positive(), doc="records per forwarded request at most")
    max_in_flight: int = option(2, check=Positive(), doc="concurrent forwarded requests")
    compression: str = option("none", check=OneOf(("none", "gzip")), doc="of forwarded requests")
    headers: dict[str, str] = option(
        factory=dict, doc="extra gRPC metadata / HTTP headers (e.g. a tenant id); also on spans and metrics"
    )
    drain_timeout_s: float = option(
        30.0, check=Positive(allow_zero=True), doc="on SIGTERM: how long to keep delivering what is held"
    )
    tls: TlsClientConfig = section(TlsClientConfig, "TLS to the downstream (`https://` or any file set = TLS)")

    def validate(self, path: str) -> None:
        super().validate(path)
        self.tls.check_endpoint(f"{path}.tls", self.endpoint)


@dataclass
class TracesConfig(Section):
    enabled: bool = option(True, doc="a span `log.anomaly.session` per scored trace-keyed session")
    endpoint: str | None = option(None, check=ClientEndpoint(), doc="null: `forward.endpoint` (and `forward.tls`)")
    protocol: str | None = option(None, check=OneOf(PROTOCOLS), doc="null: `forward.protocol`")
    only_anomalies: bool = option(False, doc="true: a span only for sessions over the threshold")
    tls: TlsClientConfig = section(TlsClientConfig, "TLS with `traces.endpoint` (without it: `forward.tls`)")

    def validate(self, path: str) -> None:
        super().validate(path)
        self.tls.check_endpoint(f"{path}.tls", self.endpoint)


@dataclass
class SemanticMappingConfig(Section):
    enabled: bool = option(
        False, doc="map templates unseen in training to the nearest training template by meaning"
    )
    min_cosine: float | None = option(
        None, doc="within [-1, 1]; null: the bundle's value, chosen on its normal training templates"
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigError(f"{path}.min_cosine: must be within [-1, 1] or null, got {self.min_cosine}")


@dataclass
class ParsingConfig(Section):
    field: str = option("body", doc="what is parsed: `body`, `attributes.<name>` or `body.<kvlist key>`")
    masking: str = option(
        "default",
        doc="masking preset: default, hdfs, bgl, thunderbird, openstack, hadoop, spark, linux, kubernetes",
    )
    masking_by_service: dict[str, str] = option(factory=dict, doc="`service.name` -> masking preset")
    custom_masking: list[dict[str, str]] = option(
        factory=list, doc='extra masking rules: `[{regex: "...", mask_with: "ID"}]`'
    )
    state_file: str | None = option(
        None, doc="Drain3 state (JSON) persisted here, and loaded at start when it exists (a regular file "
        "in this folder, no symlink out of it, at most 64 MiB; see security.md)"
    )
    state_save_interval_s: float = option(60.0, check=Positive(), doc="how often the parser state is saved")
    max_line_chars: int = option(
        8192, check=Positive(), doc="longer bodies are parsed truncated (flag: `<prefix>.body_truncated`)"
    )
    max_clusters: int = option(
        100_000, check=Positive(allow_zero=True),
        doc="Drain clusters kept per lane; past it the least recently used is evicted (as contrib's drain "
        "processor); 0 = unbounded",
    )
    workers: int = option(
        0, check=Positive(allow_zero=True),
        doc="processes that mask record bodies (most of parsing's cost) off the event loop, for requests "
        "with 64+ bodies not seen before; Drain itself stays in the sidecar, one state per lane. 0 = parse "
        "everything on the event loop: fastest where the sidecar's cores are shared or fewer than 3 (the "
        "round trip costs more CPU than it frees); try 1 with cores to spare and the event loop saturated",
    )
    semantic_mapping: SemanticMappingConfig = section(
        SemanticMappingConfig, "unseen templates -> nearest training template by meaning"
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if not (self.field == "body" or re.fullmatch(r"(attributes|body)\.[^\s]+", self.field)):
            raise ConfigError(
                f"{path}.field: expected body, attributes.<name> or body.<key>, got {self.field!r}"
            )
        for i, rule in enumerate(self.custom_masking):
            if set(rule) != {"regex", "mask_with"}:
                raise ConfigError(f"{path}.custom_masking[{i}]: expected keys regex and mask_with")
            try:
                re.compile(rule["regex"])
            except re.error as exc:
                raise ConfigError(f"{path}.custom_masking[{i}].regex: {exc}") from None


@dataclass
class WindowConfig(Section):
    size_s: float = option(60.0, check=Positive(), doc="window length")
    slide_s: float = option(60.0, check=Positive(), doc="window start spacing; < size_s = sliding windows")

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.slide_s > self.size_s:
            raise ConfigError(f"{path}.slide_s: must be <= size_s (a gap between windows loses records)")


@dataclass
class SessionsConfig(Section):
    key: str = option("trace_id", check=OneOf(SESSION_KEYS), doc="what groups records into sessions")
    resource_attributes: list[str] = option(
        factory=list, doc="for key `attributes` / `window` (e.g. `[service.name, k8s.pod.name]`)"
    )
    record_attributes: list[str] = option(factory=list, doc="for key `attributes` / `window`")
    regex: str | None = option(
        None, doc="for key `regex`, e.g. `'blk_-?\\d+'` (first capture group if any, else whole match)"
    )
    window: WindowConfig = section(WindowConfig, "for key `window`")
    order: str = option(
        "time", check=OneOf(SESSION_ORDERS), doc="order of a session's keys when it is scored"
    )
    inactivity_timeout_s: float = option(5.0, check=Positive(), doc="a session closes after this long without records")
    max_length: int = option(512, check=Positive(), doc="a session closes at this many keys")
    max_age_s: float = option(60.0, check=Positive(), doc="a session closes at this age")
    max_open_sessions: int = option(200_000, check=Positive(), doc="above it the oldest sessions close early")
    max_buffered_records: int = option(
        2_000_000, check=Positive(), doc="keys held by open sessions; above it the oldest sessions close early"
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.key == "attributes" and not (self.resource_attributes or self.record_attributes):
            raise ConfigError(f"{path}: key 'attributes' needs resource_attributes or record_attributes")
        if self.key == "regex":
            if not self.regex:
                raise ConfigError(f"{path}.regex: key 'regex' needs a regular expression")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ConfigError(f"{path}.regex: {exc}") from None
        if self.key == "window" and (self.window.size_s / self.window.slide_s) > 64:
            raise ConfigError(f"{path}.window: size_s / slide_s must be <= 64 (each record joins that many)")


@dataclass
class TritonConfig(Section):
    url: str = option("127.0.0.1:8001", check=ClientEndpoint(), doc="Triton's gRPC address")
    model_name: str | None = option(None, doc="null: the name `otel-logbert export` gave the bundle's model")
    timeout_s: float = option(1.0, doc="per inference request")
    tls: TlsClientConfig = section(TlsClientConfig, "TLS to Triton (any file set = TLS)")

    def validate(self, path: str) -> None:
        super().validate(path)
        self.tls.check_endpoint(f"{path}.tls", self.url)


@dataclass
class ScoringConfig(Section):
    scorer: str = option(
        "embedded", check=OneOf(("embedded", "triton")), doc="`embedded`: ONNX Runtime in-process"
    )
    bundle: str | None = option(
        None,
        example="/models/hdfs-fastlogad",
        doc="bundle directory; required unless learn-only (`learn.enabled: true`, `learn.score: false`). "
        "Its files must resolve inside it; JSON at most 64 MiB, model.onnx at most 2 GiB (security.md)",
    )
    routes: dict[str, str] = option(factory=dict, doc="`service.name` -> bundle directory (others use `bundle`)")
    threshold: str = option(
        "static",
        check=OneOf(("static", "dtpm")),
        doc="`dtpm`: dynamic, per `service.name` (needs `dtpm` in the bundle's threshold.json)",
    )
    batch_size: int = option(256, check=Positive(), doc="sessions per scoring batch at most")
    batch_timeout_ms: float = option(
        20.0, check=Positive(), doc="while the scorer is busy, the longest a batch waits to fill (idle: at once)"
    )
    timeout_s: float = option(2.0, check=Positive(), doc="a batch not scored by then goes on unscored")
    threads: int = option(1, check=Positive(allow_zero=True), doc="ONNX Runtime intra-op threads per embedded scorer")
    cache_entries: int = option(
        DEFAULT_CACHE_ENTRIES,
        check=Positive(allow_zero=True),
        doc="verdict cache per lane: distinct key sequences remembered (LRU; 0: off; see scoring.cache)",
    )
    triton: TritonConfig = section(TritonConfig, "for scorer `triton`")


@dataclass
class AttributesConfig(Section):
    prefix: str = option("log.anomaly", doc="prefix of the attributes written on records (DESIGN.md)")
    template: str = option("log.record.template", doc="attribute that carries the record's template")

    def validate(self, path: str) -> None:
        super().validate(path)
        if not self.prefix or not self.template:
            raise ConfigError(f"{path}: prefix and template must be non-empty")


@dataclass
class OtlpMetricsConfig(Section):
    enabled: bool = option(False, doc="also export the metrics over OTLP")
    endpoint: str | None = option(None, check=ClientEndpoint(), doc="null: `forward.endpoint` (and `forward.tls`)")
    protocol: str | None = option(
        None, check=OneOf(PROTOCOLS), doc="null: `forward.protocol`; `http` posts to `<endpoint>/v1/metrics`"
    )
    interval_s: float = option(30.0, check=Positive(), doc="export interval")
    tls: TlsClientConfig = section(TlsClientConfig, "TLS with `endpoint` (without it: `forward.tls`)")

    def validate(self, path: str) -> None:
        super().validate(path)
        self.tls.check_endpoint(f"{path}.tls", self.endpoint)

    def target(self, forward: ForwardConfig) -> tuple[str, str] | None:
        """Where metrics are exported: ``(endpoint, protocol)``, each defaulting to ``forward``'s;
        None when ``enabled`` is false."""
        if not self.enabled:
            return None
        return self.endpoint or forward.endpoint, self.protocol or forward.protocol


@dataclass
class TelemetryConfig(Section):
    endpoint: str | None = option(
        "0.0.0.0:13133", check=HostPort(), doc="`GET /healthz`, `/readyz`, `/metrics` (Prometheus); null disables"
    )
    tls: TlsServerConfig = section(TlsServerConfig, "TLS of the telemetry port (probes and scrapers then use HTTPS)")
    otlp_metrics: OtlpMetricsConfig = section(OtlpMetricsConfig, "periodic OTLP metrics export")
    log_format: str = option("json", check=OneOf(("json", "text")), doc="of the sidecar's own logs (stderr)")


@dataclass
class LearnConfig(Section):
    enabled: bool = option(False, doc="record closed sessions for `otel-logbert train`")
    output: str | None = option(None, doc="file, one session per line (required when enabled)")
    score: bool = option(True, doc="keep scoring while learning (false = learn-only, no bundle needed)")

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.enabled and not self.output:
            raise ConfigError(f"{path}.output: required when learn.enabled is true (a file path)")


@dataclass
class PersistenceConfig(Section):
    """The persistent queue (``sidecar.wal``, docs/persistence.md): off while ``directory`` is null."""

    directory: str | None = option(
        None,
        doc="write-ahead log of every acknowledged record until delivered (one sidecar per directory); "
            "null = memory only, a crash loses what is held",
    )
    max_bytes: int = option(
        1024 * MiB, check=Positive(), doc="log size on disk at most; at it the receivers push back (503)"
    )
    segment_bytes: int = option(
        16 * MiB, check=Positive(), doc="log segment file size; a segment is deleted once all of it is delivered"
    )

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.max_bytes < 2 * self.segment_bytes:
            raise ConfigError(
                f"{path}.max_bytes: must be at least twice segment_bytes ({2 * self.segment_bytes}), "
                f"got {self.max_bytes}"
            )


@dataclass
class SidecarConfig(Section):
    receivers: ReceiversConfig = section(ReceiversConfig, "where the Collector sends logs")
    forward: ForwardConfig = section(ForwardConfig, "where enriched logs go")
    traces: TracesConfig = section(TracesConfig, "span events for trace-keyed sessions")
    parsing: ParsingConfig = section(ParsingConfig, "body -> log key (Drain3)")
    sessions: SessionsConfig = section(SessionsConfig, "grouping records into sessions and closing them")
    scoring: ScoringConfig = section(ScoringConfig, "the model and how sessions reach it")
    attributes: AttributesConfig = section(AttributesConfig, "names written on records")
    telemetry: TelemetryConfig = section(TelemetryConfig, "the sidecar's own health, metrics and logs")
    learn: LearnConfig = section(LearnConfig, "learn mode: record sessions to train on")
    persistence: PersistenceConfig = section(
        PersistenceConfig, "persistent queue: acknowledged records survive a crash (opt-in)"
    )

    @property
    def scoring_enabled(self) -> bool:
        """False only in learn-only mode (``learn.enabled`` and not ``learn.score``)."""
        return not (self.learn.enabled and not self.learn.score)

    def validate(self, path: str = "") -> None:
        """Every section's checks, then the rules that span sections. Raises ``ConfigError``."""
        super().validate(path)
        if self.scoring_enabled and not self.scoring.bundle:
            raise ConfigError(
                f"{_join(path, 'scoring.bundle')}: required (a bundle directory) unless learn-only "
                "(learn.enabled: true, learn.score: false)"
            )


# --- loading ----------------------------------------------------------------------------------------


def load_config(
    path: str | Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SidecarConfig:
    """Read ``path`` (YAML; None = defaults only), apply environment overrides, then ``overrides``
    (dotted path -> value, e.g. ``{"scoring.bundle": "/b"}``: the command line), validate.

    Raises ``ConfigError`` naming the file and the key on any problem.
    """
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{path}{where}: {problem}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(
        raw, environ=os.environ if environ is None else environ, source=path, overrides=overrides
    )


def config_from_dict(
    raw: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    source: object = None,
    overrides: Mapping[str, Any] | None = None,
) -> SidecarConfig:
    """Build and validate a ``SidecarConfig`` from plain data (what YAML gives), env overrides and
    dotted-path ``overrides``."""
    prefix = f"{source}: " if source is not None else ""
    try:
        data = _apply_env(dict(raw), environ or {})
        for dotted, value in (overrides or {}).items():
            _set_path(data, tuple(dotted.split(".")), value)
        config = _build(SidecarConfig, data, "")
        validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
    return config


def leaf_paths(cls: type = SidecarConfig, base: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf key of the schema as a path tuple, e.g. ``("scoring", "bundle")``."""
    paths: list[tuple[str, ...]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            paths.extend(leaf_paths(tp, base + (f.name,)))
        else:
            paths.append(base + (f.name,))
    return paths


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(path).upper()


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    known = {env_name(p): p for p in leaf_paths()}
    sections = {f.name.upper() for f in dataclasses.fields(SidecarConfig)}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = known.get(name)
        if path is None:
            section = name[len(ENV_PREFIX) :].split("_", 1)[0]
            if section in sections:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"environment variable {name} names no configuration key{hint}")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        _set_path(data, path, parsed)
    return data


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[path[-1]] = value


def _build(cls: type, data: Any, path: str) -> Any:
    """Recursively build dataclass ``cls`` from ``data``, checking keys and types."""
    where = path or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{_join(path, str(key))}: unknown key{hint}")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], _join(path, name))
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, path)
    if origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(key_tp, k, path): _coerce(value_tp, v, f"{path}.{k}") for k, v in value.items()}
    return _scalar(tp, value, path)


def _not_bool(kinds: tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kinds) and not isinstance(value, bool)


# scalar type -> (accepts a YAML value, what the error says was expected); the value is then ``tp(value)``
_SCALARS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda value: isinstance(value, bool), "true or false"),
    int: (_not_bool((int,)), "an integer"),
    float: (_not_bool((int, float)), "a number"),
    str: (_not_bool((str, int, float)), "a string"),
}


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp not in _SCALARS:
        raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in this module's schema
    accepts, expected = _SCALARS[tp]
    if not accepts(value):
        raise ConfigError(f"{path}: expected {expected}, got {_describe(value)}")
    return tp(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


# --- validation -------------------------------------------------------------------------------------


def validate(c: SidecarConfig) -> None:
    """Every section's checks (``Section.validate``) and the cross-section rules. Raises ``ConfigError``."""
    c.validate()


def to_dict(config: SidecarConfig) -> dict[str, Any]:
    """The effective configuration as plain data (for logging it at start-up)."""
    return dataclasses.asdict(config)
