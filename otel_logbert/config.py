"""The sidecar's typed configuration: YAML -> dataclasses, environment overrides, validation.

The YAML contract is documented in ``docs/sidecar-config.md``; the dataclasses below mirror it one to
one (section -> dataclass, key -> field, default -> field default). ``load_config`` is the only entry
point the sidecar needs:

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from otel_logbert.errors import UserError

ENV_PREFIX = "OTEL_LOGBERT_"
MiB = 1024 * 1024


class ConfigError(UserError):
    """The configuration is invalid; the message names the key (dotted path) and what is wrong."""


# --- sections ---------------------------------------------------------------------------------------


@dataclass
class GrpcReceiverConfig:
    endpoint: str | None = "0.0.0.0:4317"  # None disables the receiver
    max_message_bytes: int = 16 * MiB


@dataclass
class HttpReceiverConfig:
    endpoint: str | None = "0.0.0.0:4318"  # None disables the receiver
    max_body_bytes: int = 16 * MiB


@dataclass
class ReceiversConfig:
    grpc: GrpcReceiverConfig = field(default_factory=GrpcReceiverConfig)
    http: HttpReceiverConfig = field(default_factory=HttpReceiverConfig)


@dataclass
class RetryConfig:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # 0 = never give up on a retryable failure (nothing is dropped; the receivers push back instead).
    # > 0: a batch still failing after this long is dropped and counted in records_dropped.
    max_elapsed_s: float = 0.0


@dataclass
class ForwardConfig:
    endpoint: str = "http://127.0.0.1:14317"
    protocol: str = "grpc"  # grpc | http
    timeout_s: float = 10.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    queue_max_records: int = 200_000
    batch_max_records: int = 8192  # records per forwarded request at most
    max_in_flight: int = 2  # concurrent export requests
    compression: str = "none"  # none | gzip
    headers: dict[str, str] = field(default_factory=dict)
    drain_timeout_s: float = 30.0  # on shutdown: how long to keep delivering what is buffered


@dataclass
class TracesConfig:
    enabled: bool = True
    endpoint: str | None = None  # default: forward.endpoint
    protocol: str | None = None  # default: forward.protocol
    only_anomalies: bool = False  # export a span for anomalous sessions only


@dataclass
class SemanticMappingConfig:
    enabled: bool = False  # map templates unseen in training to the nearest training template by meaning
    min_cosine: float | None = None  # None: the bundle's value, chosen on its normal training templates


@dataclass
class ParsingConfig:
    # ``field`` is a key of this section, so ``dataclasses.field`` is spelled out below.
    field: str = "body"  # body | attributes.<name> | body.<kvlist key>
    masking: str = "default"
    masking_by_service: dict[str, str] = dataclasses.field(default_factory=dict)
    custom_masking: list[dict[str, str]] = dataclasses.field(default_factory=list)
    state_file: str | None = None
    state_save_interval_s: float = 60.0
    max_line_chars: int = 8192
    semantic_mapping: SemanticMappingConfig = dataclasses.field(default_factory=SemanticMappingConfig)


@dataclass
class WindowConfig:
    size_s: float = 60.0
    slide_s: float = 60.0


@dataclass
class SessionsConfig:
    key: str = "trace_id"  # trace_id | attributes | regex | window
    resource_attributes: list[str] = field(default_factory=list)
    record_attributes: list[str] = field(default_factory=list)
    regex: str | None = None
    window: WindowConfig = field(default_factory=WindowConfig)
    order: str = "time"  # time | arrival: the key order a closed session is scored in
    inactivity_timeout_s: float = 5.0
    max_length: int = 512
    max_age_s: float = 60.0
    max_open_sessions: int = 200_000
    max_buffered_records: int = 2_000_000


@dataclass
class TritonConfig:
    url: str = "127.0.0.1:8001"
    model_name: str | None = None
    timeout_s: float = 1.0


@dataclass
class ScoringConfig:
    scorer: str = "embedded"  # embedded | triton
    bundle: str | None = None
    routes: dict[str, str] = field(default_factory=dict)  # service.name -> bundle directory
    threshold: str = "static"  # static | dtpm
    batch_size: int = 256
    batch_timeout_ms: float = 20.0
    timeout_s: float = 2.0
    threads: int = 1  # ONNX Runtime intra-op threads per embedded scorer
    triton: TritonConfig = field(default_factory=TritonConfig)


@dataclass
class AttributesConfig:
    prefix: str = "log.anomaly"
    template: str = "log.record.template"


@dataclass
class OtlpMetricsConfig:
    enabled: bool = False
    endpoint: str | None = None  # default: forward.endpoint when forward.protocol is grpc
    interval_s: float = 30.0


@dataclass
class TelemetryConfig:
    endpoint: str | None = "0.0.0.0:13133"  # None disables /healthz, /readyz, /metrics
    otlp_metrics: OtlpMetricsConfig = field(default_factory=OtlpMetricsConfig)
    log_format: str = "json"  # json | text


@dataclass
class LearnConfig:
    enabled: bool = False
    output: str | None = None
    score: bool = True


@dataclass
class SidecarConfig:
    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)
    parsing: ParsingConfig = field(default_factory=ParsingConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    attributes: AttributesConfig = field(default_factory=AttributesConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)

    @property
    def scoring_enabled(self) -> bool:
        """False only in learn-only mode (``learn.enabled`` and not ``learn.score``)."""
        return not (self.learn.enabled and not self.learn.score)


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
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in this module's schema


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


# --- validation -------------------------------------------------------------------------------------

_ENDPOINT = re.compile(r"^\[?[0-9A-Za-z.:_-]*\]?:\d{1,5}$")
SESSION_KEYS = ("trace_id", "attributes", "regex", "window")
SESSION_ORDERS = ("time", "arrival")
PROTOCOLS = ("grpc", "http")


def _choice(path: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")


def _positive(path: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _listen(path: str, endpoint: str | None) -> None:
    if endpoint is not None and not _ENDPOINT.match(endpoint):
        raise ConfigError(f"{path}: expected host:port, got {endpoint!r}")


def validate(c: SidecarConfig) -> None:
    """Cross-field checks the types cannot express. Raises ``ConfigError``."""
    _listen("receivers.grpc.endpoint", c.receivers.grpc.endpoint)
    _listen("receivers.http.endpoint", c.receivers.http.endpoint)
    _listen("telemetry.endpoint", c.telemetry.endpoint)
    if c.receivers.grpc.endpoint is None and c.receivers.http.endpoint is None:
        raise ConfigError("receivers: at least one of grpc.endpoint and http.endpoint must be set")
    _positive("receivers.grpc.max_message_bytes", c.receivers.grpc.max_message_bytes)
    _positive("receivers.http.max_body_bytes", c.receivers.http.max_body_bytes)

    f = c.forward
    _choice("forward.protocol", f.protocol, PROTOCOLS)
    _choice("forward.compression", f.compression, ("none", "gzip"))
    if not f.endpoint:
        raise ConfigError("forward.endpoint: must be set")
    for name in ("timeout_s", "queue_max_records", "batch_max_records", "max_in_flight"):
        _positive(f"forward.{name}", getattr(f, name))
    _positive("forward.drain_timeout_s", f.drain_timeout_s, allow_zero=True)
    _positive("forward.retry.initial_backoff_s", f.retry.initial_backoff_s)
    _positive("forward.retry.max_backoff_s", f.retry.max_backoff_s)
    _positive("forward.retry.max_elapsed_s", f.retry.max_elapsed_s, allow_zero=True)
    if f.retry.max_backoff_s < f.retry.initial_backoff_s:
        raise ConfigError("forward.retry.max_backoff_s: must be >= initial_backoff_s")
    if c.traces.protocol is not None:
        _choice("traces.protocol", c.traces.protocol, PROTOCOLS)

    p = c.parsing
    if not (p.field == "body" or re.fullmatch(r"(attributes|body)\.[^\s]+", p.field)):
        raise ConfigError(f"parsing.field: expected body, attributes.<name> or body.<key>, got {p.field!r}")
    _positive("parsing.max_line_chars", p.max_line_chars)
    _positive("parsing.state_save_interval_s", p.state_save_interval_s)
    cosine = p.semantic_mapping.min_cosine
    if cosine is not None and not -1.0 <= cosine <= 1.0:
        raise ConfigError(f"parsing.semantic_mapping.min_cosine: must be within [-1, 1] or null, got {cosine}")
    for i, rule in enumerate(p.custom_masking):
        if set(rule) != {"regex", "mask_with"}:
            raise ConfigError(f"parsing.custom_masking[{i}]: expected keys regex and mask_with")
        try:
            re.compile(rule["regex"])
        except re.error as exc:
            raise ConfigError(f"parsing.custom_masking[{i}].regex: {exc}") from None

    s = c.sessions
    _choice("sessions.key", s.key, SESSION_KEYS)
    _choice("sessions.order", s.order, SESSION_ORDERS)
    if s.key == "attributes" and not (s.resource_attributes or s.record_attributes):
        raise ConfigError("sessions: key 'attributes' needs resource_attributes or record_attributes")
    if s.key == "regex":
        if not s.regex:
            raise ConfigError("sessions.regex: key 'regex' needs a regular expression")
        try:
            re.compile(s.regex)
        except re.error as exc:
            raise ConfigError(f"sessions.regex: {exc}") from None
    _positive("sessions.window.size_s", s.window.size_s)
    _positive("sessions.window.slide_s", s.window.slide_s)
    if s.window.slide_s > s.window.size_s:
        raise ConfigError("sessions.window.slide_s: must be <= size_s (a gap between windows loses records)")
    if s.key == "window" and (s.window.size_s / s.window.slide_s) > 64:
        raise ConfigError("sessions.window: size_s / slide_s must be <= 64 (each record joins that many)")
    for name in (
        "inactivity_timeout_s",
        "max_length",
        "max_age_s",
        "max_open_sessions",
        "max_buffered_records",
    ):
        _positive(f"sessions.{name}", getattr(s, name))

    sc = c.scoring
    _choice("scoring.scorer", sc.scorer, ("embedded", "triton"))
    _choice("scoring.threshold", sc.threshold, ("static", "dtpm"))
    for name in ("batch_size", "batch_timeout_ms", "timeout_s"):
        _positive(f"scoring.{name}", getattr(sc, name))
    _positive("scoring.threads", sc.threads, allow_zero=True)
    if c.scoring_enabled and not sc.bundle:
        raise ConfigError(
            "scoring.bundle: required (a bundle directory) unless learn-only "
            "(learn.enabled: true, learn.score: false)"
        )

    if not c.attributes.prefix or not c.attributes.template:
        raise ConfigError("attributes: prefix and template must be non-empty")
    _choice("telemetry.log_format", c.telemetry.log_format, ("json", "text"))
    _positive("telemetry.otlp_metrics.interval_s", c.telemetry.otlp_metrics.interval_s)
    if c.learn.enabled and not c.learn.output:
        raise ConfigError("learn.output: required when learn.enabled is true (a file path)")


def to_dict(config: SidecarConfig) -> dict[str, Any]:
    """The effective configuration as plain data (for logging it at start-up)."""
    return dataclasses.asdict(config)
