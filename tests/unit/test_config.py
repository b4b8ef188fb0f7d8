"""config: YAML -> typed config, environment overrides, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sidecar.yaml"
    c = load_config(example, environ={})
    assert c.sessions.key in ("trace_id", "regex")


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
