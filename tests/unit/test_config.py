"""config: YAML -> typed config, environment overrides, validation messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_logbert.config import ConfigError, config_from_dict, env_name, leaf_paths, load_config
from otel_logbert.errors import UserError

BUNDLE = {"scoring": {"bundle": "/models/b"}}


def test_defaults_match_the_documented_contract() -> None:
    c = config_from_dict(BUNDLE)
    assert c.receivers.grpc.endpoint == "0.0.0.0:4317"
    assert c.receivers.http.max_body_bytes == 16 * 1024 * 1024
    assert c.forward.protocol == "grpc" and c.forward.queue_max_records == 200_000
    assert c.sessions.key == "trace_id" and c.sessions.inactivity_timeout_s == 5.0
    assert c.sessions.order == "time"
    assert c.scoring.batch_size == 256 and c.scoring.threshold == "static"
    assert c.attributes.prefix == "log.anomaly"
    assert c.forward.retry.max_elapsed_s == 0.0  # never give up: nothing is dropped


def test_every_key_of_the_doc_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sidecar-config.md").read_text()
    yaml_text = doc.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml_text)
    c = load_config(path, environ={})
    assert c.scoring.bundle == "/models/hdfs-fastlogad"


def test_example_config_loads_with_every_value_it_sets() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sidecar.yaml"
    c = load_config(example, environ={})

    def check(section: object, values: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert hasattr(section, key), f"{path}{key}: not a config field"
            if isinstance(value, dict):
                check(getattr(section, key), value, f"{path}{key}.")
            else:
                assert getattr(section, key) == value, f"{path}{key}"

    check(c, yaml.safe_load(example.read_text()), "")
    assert c.sessions.key == "trace_id" and c.parsing.state_file == "/var/lib/otel-logbert/drain3.json"


def test_unknown_key_names_the_path_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"sessions\.inactivty_timeout_s: unknown key \(did you mean "
                       r"'inactivity_timeout_s'\?\)"):
        config_from_dict({**BUNDLE, "sessions": {"inactivty_timeout_s": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sessions": {"max_length": "long"}}, r"sessions\.max_length: expected an integer, got str 'long'"),
        ({"traces": {"enabled": "yes"}}, r"traces\.enabled: expected true or false"),
        ({"forward": {"protocol": "udp"}}, r"forward\.protocol: 'udp' is not one of grpc, http"),
        ({"sessions": {"key": "regex"}}, r"sessions\.regex: key 'regex' needs a regular expression"),
        ({"sessions": {"key": "regex", "regex": "("}}, r"sessions\.regex: "),
        ({"sessions": {"window": {"size_s": 10, "slide_s": 20}}}, r"slide_s: must be <= size_s"),
        ({"sessions": {"key": "attributes"}}, r"needs resource_attributes or record_attributes"),
        ({"receivers": {"grpc": {"endpoint": "nowhere"}}}, r"receivers\.grpc\.endpoint: expected host:port"),
        ({"parsing": {"field": "attributes."}}, r"parsing\.field"),
        ({"sessions": {"max_open_sessions": 0}}, r"sessions\.max_open_sessions: must be > 0"),
        ({"sessions": {"order": "random"}}, r"sessions\.order: "),
        ({"learn": {"enabled": True}}, r"learn\.output: required"),
    ],
)
def test_invalid_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BUNDLE, **data})


def test_bundle_required_unless_learn_only() -> None:
    with pytest.raises(ConfigError, match=r"scoring\.bundle: required"):
        config_from_dict({})
    c = config_from_dict({"learn": {"enabled": True, "score": False, "output": "s.txt"}})
    assert not c.scoring_enabled and c.scoring.bundle is None


def test_environment_overrides_parse_yaml_scalars() -> None:
    env = {
        "OTEL_LOGBERT_SCORING_BUNDLE": "/env/bundle",
        "OTEL_LOGBERT_RECEIVERS_GRPC_MAX_MESSAGE_BYTES": "1024",
        "OTEL_LOGBERT_SESSIONS_RESOURCE_ATTRIBUTES": "[service.name, k8s.pod.name]",
        "OTEL_LOGBERT_TRACES_ENDPOINT": "null",
        "OTEL_LOGBERT_TRACES_ENABLED": "false",
        "UNRELATED": "x",
        "OTEL_LOGBERT_DEVICE": "ignored: not a config section",
    }
    c = config_from_dict({"scoring": {"bundle": "/file/bundle"}}, environ=env)
    assert c.scoring.bundle == "/env/bundle"
    assert c.receivers.grpc.max_message_bytes == 1024
    assert c.sessions.resource_attributes == ["service.name", "k8s.pod.name"]
    assert c.traces.enabled is False and c.traces.endpoint is None


def test_misspelled_environment_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_LOGBERT_SCORING_BUNDEL names no configuration key"):
        config_from_dict(BUNDLE, environ={"OTEL_LOGBERT_SCORING_BUNDEL": "/x"})


def test_env_names_cover_every_leaf() -> None:
    names = {env_name(p) for p in leaf_paths()}
    assert "OTEL_LOGBERT_SCORING_BUNDLE" in names
    assert "OTEL_LOGBERT_RECEIVERS_HTTP_ENDPOINT" in names
    assert "OTEL_LOGBERT_FORWARD_RETRY_MAX_ELAPSED_S" in names
    assert len(names) == len(leaf_paths())  # no two keys share a variable


def test_overrides_win_over_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("forward:\n  endpoint: http://file:1\n")
    c = load_config(path, environ={"OTEL_LOGBERT_FORWARD_ENDPOINT": "http://env:2"},
                    overrides={"forward.endpoint": "http://cli:3", "scoring.bundle": "/b"})
    assert c.forward.endpoint == "http://cli:3"


def test_file_errors_are_user_errors_with_location(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("scoring:\n  bundle: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(bad, environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy, environ={})


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    c = load_config(path, environ={"OTEL_LOGBERT_SCORING_BUNDLE": "/b"})
    assert c.scoring.bundle == "/b"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"receivers": {"grpc": {"endpoint": None}, "http": {"endpoint": None}}},
         r"^receivers: at least one of grpc\.endpoint and http\.endpoint must be set$"),
        ({"receivers": {"http": {"max_body_bytes": 0}}}, r"^receivers\.http\.max_body_bytes: must be > 0, got 0$"),
        ({"telemetry": {"endpoint": "13133"}}, r"^telemetry\.endpoint: expected host:port, got '13133'$"),
        ({"forward": {"endpoint": ""}}, r"^forward\.endpoint: must be set$"),
        ({"forward": {"compression": "zstd"}}, r"^forward\.compression: 'zstd' is not one of none, gzip$"),
        ({"forward": {"drain_timeout_s": -1}}, r"^forward\.drain_timeout_s: must be >= 0, got -1\.0$"),
        ({"forward": {"retry": {"initial_backoff_s": 2, "max_backoff_s": 1}}},
         r"^forward\.retry\.max_backoff_s: must be >= initial_backoff_s$"),
        ({"traces": {"protocol": "udp"}}, r"^traces\.protocol: 'udp' is not one of grpc, http$"),
        ({"parsing": {"custom_masking": [{"regex": "x"}]}},
         r"^parsing\.custom_masking\[0\]: expected keys regex and mask_with$"),
        ({"parsing": {"custom_masking": [{"regex": "(", "mask_with": "X"}]}},
         r"^parsing\.custom_masking\[0\]\.regex: "),
        ({"parsing": {"semantic_mapping": {"min_cosine": 1.5}}},
         r"^parsing\.semantic_mapping\.min_cosine: must be within \[-1, 1\] or null, got 1\.5$"),
        ({"sessions": {"key": "window", "window": {"size_s": 65, "slide_s": 1}}},
         r"^sessions\.window: size_s / slide_s must be <= 64"),
        ({"scoring": {"bundle": "/b", "threads": -1}}, r"^scoring\.threads: must be >= 0, got -1$"),
        ({"scoring": {"bundle": "/b", "scorer": "tf"}}, r"^scoring\.scorer: 'tf' is not one of embedded, triton$"),
        ({"attributes": {"prefix": ""}}, r"^attributes: prefix and template must be non-empty$"),
        ({"telemetry": {"log_format": "xml"}}, r"^telemetry\.log_format: 'xml' is not one of json, text$"),
        ({"telemetry": {"otlp_metrics": {"protocol": "udp"}}},
         r"^telemetry\.otlp_metrics\.protocol: 'udp' is not one of grpc, http$"),
        ({"telemetry": {"otlp_metrics": {"interval_s": 0}}}, r"^telemetry\.otlp_metrics\.interval_s: must be > 0"),
    ],
)
def test_every_section_rule_keeps_its_message(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BUNDLE, **data})


def test_zero_is_allowed_where_documented() -> None:
    c = config_from_dict({"scoring": {"bundle": "/b", "threads": 0},
                          "forward": {"drain_timeout_s": 0, "retry": {"max_elapsed_s": 0}}})
    assert c.scoring.threads == 0 and c.forward.drain_timeout_s == 0.0


def test_a_section_validates_on_its_own_under_the_path_it_is_given() -> None:
    from otel_logbert.config import RetryConfig, SessionsConfig, WindowConfig

    with pytest.raises(ConfigError, match=r"^x\.retry\.max_backoff_s: must be >= initial_backoff_s$"):
        RetryConfig(initial_backoff_s=2.0, max_backoff_s=1.0).validate("x.retry")
    with pytest.raises(ConfigError, match=r"^s\.window\.slide_s: must be <= size_s"):
        SessionsConfig(window=WindowConfig(size_s=1.0, slide_s=2.0)).validate("s")
    with pytest.raises(ConfigError, match=r"^s\.max_length: must be > 0, got 0$"):
        SessionsConfig(max_length=0).validate("s")
    RetryConfig().validate("forward.retry")  # defaults are valid


def test_every_key_and_section_has_a_description() -> None:
    """The generated docs take descriptions from the fields' ``doc`` metadata; none may be missing."""
    import dataclasses
    import typing

    from otel_logbert.config import Section, SidecarConfig

    def missing(cls: type, path: str) -> list[str]:
        hints, out = typing.get_type_hints(cls), []
        for f in dataclasses.fields(cls):
            if not f.metadata.get("doc"):
                out.append(path + f.name)
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], Section):
                out += missing(hints[f.name], f"{path}{f.name}.")
        return out

    assert missing(SidecarConfig, "") == []


@pytest.mark.parametrize(
    ("forward", "otlp", "target"),
    [
        ({}, {"enabled": False}, None),
        ({}, {"enabled": True}, ("http://127.0.0.1:14317", "grpc")),
        ({"protocol": "http", "endpoint": "http://c:4318"}, {"enabled": True}, ("http://c:4318", "http")),
        ({"protocol": "http"}, {"enabled": True, "endpoint": "m:4317", "protocol": "grpc"}, ("m:4317", "grpc")),
    ],
)
def test_otlp_metrics_target_defaults_to_the_forward_endpoint_and_protocol(forward: dict, otlp: dict,
                                                                           target: tuple | None) -> None:
    c = config_from_dict({**BUNDLE, "forward": forward, "telemetry": {"otlp_metrics": otlp}})
    assert c.telemetry.otlp_metrics.target(c.forward) == target


def test_otlp_metrics_protocol_has_an_environment_override() -> None:
    c = config_from_dict(BUNDLE, environ={"OTEL_LOGBERT_TELEMETRY_OTLP_METRICS_PROTOCOL": "http"})
    assert c.telemetry.otlp_metrics.protocol == "http"
