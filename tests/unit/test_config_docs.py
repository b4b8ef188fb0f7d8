"""config_docs: the generated parts of docs/sidecar-config.md are current and track the code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otel_logbert import config_docs
from otel_logbert.config import SidecarConfig, config_from_dict, leaf_paths
from otel_logbert.otlp.instruments import METRICS, MetricSpec

REPO = Path(__file__).resolve().parents[2]


def test_the_doc_is_current() -> None:
    text = config_docs.DOC.read_text(encoding="utf-8")
    stale = config_docs.stale_parts(text)
    assert not stale, f"docs/sidecar-config.md is stale ({', '.join(stale)}): run {config_docs.COMMAND}"


def test_the_key_table_has_one_row_per_key_with_its_default() -> None:
    rows = [line for line in config_docs.key_table().splitlines()[2:]]
    keys = [row.split("|")[1].strip().strip("`") for row in rows]
    assert keys == [".".join(p) for p in leaf_paths()]
    row = dict(zip(keys, rows, strict=True))
    assert row["forward.protocol"] == ("| `forward.protocol` | `grpc` \\| `http` | `\"grpc\"` | "
                                       "`http` posts protobuf to `<endpoint>/v1/logs` |")
    assert "| integer > 0 | `16777216` |" in row["receivers.grpc.max_message_bytes"]
    assert "| number >= 0 | `0.0` |" in row["forward.retry.max_elapsed_s"]
    assert "| host:port or null | `\"0.0.0.0:13133\"` |" in row["telemetry.endpoint"]
    assert "| `grpc` \\| `http` or null | `null` |" in row["telemetry.otlp_metrics.protocol"]


def test_the_yaml_skeleton_loads_to_the_defaults() -> None:
    block = config_docs.yaml_skeleton().removeprefix("```yaml\n").removesuffix("\n```")
    loaded = config_from_dict(yaml.safe_load(block), environ={})
    expected = SidecarConfig()
    expected.scoring.bundle = "/models/hdfs-fastlogad"  # the one example value (no default)
    assert dataclasses.asdict(loaded) == dataclasses.asdict(expected)


def test_the_metric_table_lists_every_metric() -> None:
    rows = config_docs.metric_table().splitlines()[2:]
    assert [row.split("|")[1].strip().strip("`") for row in rows] == [m.name for m in METRICS]
    assert "| `otel_logbert.requests.refused` | `otel_logbert_requests_refused_total` | counter | `{request}` " \
           "| `protocol`, `reason` |" in rows[4]


def test_a_changed_default_or_metric_makes_the_doc_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    text = config_docs.DOC.read_text(encoding="utf-8")
    monkeypatch.setattr(config_docs, "METRICS", (*METRICS, MetricSpec("x", "otel_logbert.x", "gauge", "", "new")))
    assert config_docs.stale_parts(text) == ["metrics"]
    monkeypatch.undo()
    row = "| `forward.timeout_s` | number > 0 | `10.0` |"
    tampered = text.replace(row, row.replace("10.0", "9.0"))
    assert tampered != text and config_docs.stale_parts(tampered) == ["config-keys"]
    assert config_docs.render(tampered) == text


def test_the_command_checks_and_rewrites_a_file(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    fresh = config_docs.DOC.read_text(encoding="utf-8")
    doc.write_text(fresh.replace("| `learn.score` | boolean | `true` |", "| `learn.score` | boolean | `false` |"))
    cmd = [sys.executable, "-m", "otel_logbert.config_docs"]
    check = subprocess.run([*cmd, "--check", str(doc)], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 1 and "config-keys" in check.stderr and config_docs.COMMAND in check.stderr
    write = subprocess.run([*cmd, str(doc)], cwd=REPO, capture_output=True, text=True)
    assert write.returncode == 0 and doc.read_text() == fresh
    assert subprocess.run([*cmd, "--check", str(doc)], cwd=REPO).returncode == 0


def test_missing_markers_are_named() -> None:
    with pytest.raises(config_docs.StaleDocError, match="doc.md: no '<!-- BEGIN GENERATED config-yaml -->'"):
        config_docs.render("# no markers\n", "doc.md")
