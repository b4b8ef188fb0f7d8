"""Every Collector config in collector-config/ is loaded and checked against the component list of
the otelcol-contrib release it names (collector-config/otelcol-contrib-v*.components.txt).

What this proves: each file is YAML of the Collector's shape, every component type it names exists
in that release (by the release manifest; see the list's header for how names were derived), every
pipeline references defined components, and the ports agree with the sidecar contract. The one
config made of components the small real build has (filelog-legacy.yaml) is also run through
`otelcol validate` by the real binary; the others can only be checked this way.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

CONFIG_DIR = REPO / "collector-config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
KINDS = {"receivers": "receiver", "processors": "processor", "exporters": "exporter",
         "extensions": "extension", "connectors": "connector"}


def component_list() -> tuple[str, dict[tuple[str, str], str]]:
    """(release version, {(kind, type): status}) from the one components file."""
    files = sorted(CONFIG_DIR.glob("otelcol-contrib-v*.components.txt"))
    assert len(files) == 1, f"expected exactly one component list, found {files}"
    version = re.search(r"v(\d+\.\d+\.\d+)", files[0].name).group(1)
    entries: dict[tuple[str, str], str] = {}
    for line in files[0].read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, ctype, module, status = line.split("\t")
        assert (kind, ctype) not in entries, f"duplicate {kind} {ctype}"
        assert module.startswith(("go.opentelemetry.io/collector/", "github.com/open-telemetry/"))
        entries[(kind, ctype)] = status
    return version, entries


def check_config(doc: dict, known: dict[tuple[str, str], str]) -> list[str]:
    """Problems in one parsed Collector config; empty when it is sound."""
    problems: list[str] = []
    defined: dict[str, set[str]] = {}
    for section, kind in KINDS.items():
        ids = set((doc.get(section) or {}).keys())
        defined[section] = ids
        for cid in ids:
            ctype = cid.split("/", 1)[0]
            status = known.get((kind, ctype))
            if status is None:
                problems.append(f"{kind} type {ctype!r} ({cid}) is not in the release")
            elif status != "verified":
                problems.append(f"{kind} type {ctype!r} is only derived; verify it upstream first")
    service = doc.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("no service.pipelines")
    used: dict[str, set[str]] = {s: set() for s in KINDS}
    for ext in service.get("extensions") or []:
        used["extensions"].add(ext)
        if ext not in defined["extensions"]:
            problems.append(f"service.extensions names undefined {ext}")
    for name, pipe in pipelines.items():
        signal = name.split("/", 1)[0]
        if signal not in ("logs", "traces", "metrics", "profiles"):
            problems.append(f"pipeline {name}: unknown signal {signal}")
        if not pipe.get("receivers") or not pipe.get("exporters"):
            problems.append(f"pipeline {name} needs receivers and exporters")
        for section in ("receivers", "processors", "exporters"):
            for cid in pipe.get(section) or []:
                used[section].add(cid)
                if cid not in defined[section] and cid not in defined["connectors"]:
                    problems.append(f"pipeline {name} names undefined {section[:-1]} {cid}")
        procs = pipe.get("processors") or []
        if procs and "memory_limiter" in procs and procs[0] != "memory_limiter":
            problems.append(f"pipeline {name}: memory_limiter must come first")
    for section in ("receivers", "processors", "exporters", "extensions"):
        for cid in defined[section] - used[section]:
            problems.append(f"{section[:-1]} {cid} is defined but never used")
    return problems


def test_component_list_is_sane():
    version, known = component_list()
    assert version == "0.136.0"
    # A few anchors from the release manifest; the list has ~230 entries.
    assert len(known) > 200
    anchors = [("receiver", "otlp"), ("receiver", "filelog"), ("exporter", "loadbalancing"),
               ("exporter", "elasticsearch"), ("processor", "memory_limiter"), ("extension", "health_check")]
    for key in anchors:
        assert known[key] == "verified"
    # lokiexporter left contrib before this release: Loki is reached with otlphttp.
    assert ("exporter", "loki") not in known


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_components_exist_in_release(path: Path):
    version, known = component_list()
    text = path.read_text()
    assert text.startswith("#"), "each config opens with a comment that says what it is for"
    assert f"otelcol-contrib v{version}" in text.split("\n\n", 1)[0], "header must name the release"
    doc = yaml.safe_load(text)
    assert check_config(doc, known) == []


def test_checker_rejects_bad_configs():
    """The checker itself can fail: unknown types, dangling references, unused components."""
    _, known = component_list()
    bad = {
        "receivers": {"otlp": {}},
        "exporters": {"lokiexporter": {}, "debug": {}, "otlp/unused": {}},
        "processors": {"batch": {}, "memory_limiter": {}},
        "service": {"pipelines": {"logs": {"receivers": ["otlp"], "processors": ["batch", "memory_limiter"],
                                           "exporters": ["lokiexporter", "otlphttp/missing"]}}},
    }
    problems = "\n".join(check_config(bad, known))
    assert "'lokiexporter'" in problems
    assert "undefined exporter otlphttp/missing" in problems
    assert "memory_limiter must come first" in problems
    assert "otlp/unused is defined but never used" in problems


def test_sidecar_pattern_matches_sidecar_contract():
    """The forward target and the sidecar's receiver agree with docs/sidecar-config.md defaults."""
    doc = yaml.safe_load((CONFIG_DIR / "sidecar-pattern.yaml").read_text())
    enriched = doc["receivers"]["otlp/enriched"]["protocols"]["grpc"]["endpoint"]
    assert enriched.endswith(":14317")  # forward.endpoint default in the contract
    contract = (REPO / "docs" / "sidecar-config.md").read_text()
    assert '"http://127.0.0.1:14317"' in contract
    exp = doc["exporters"]["otlp/logbert"]
    assert exp["sending_queue"]["enabled"] and exp["retry_on_failure"]["enabled"]
    assert exp["endpoint"].endswith(":4317}")  # the sidecar's gRPC receiver port
    scale_out = yaml.safe_load((CONFIG_DIR / "scale-out-loadbalancing.yaml").read_text())
    lb = scale_out["exporters"]["loadbalancing"]
    assert "traceID" in lb["routing_key"] and "headless" in lb["resolver"]["dns"]["hostname"]
    es = doc["exporters"]["elasticsearch"]
    assert es["mapping"]["mode"] == "otel"
    assert doc["exporters"]["otlphttp/loki"]["endpoint"].endswith("/otlp}")


def test_real_collector_validates_filelog_config(tools):
    """The real otelcol-contrib build accepts the filelog config as shipped."""
    cfg = CONFIG_DIR / "filelog-legacy.yaml"
    out = subprocess.run([str(tools.otelcol), "validate", f"--config=file:{cfg}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_real_collector_rejects_unknown_component(tools, tmp_path):
    """...and `validate` does fail on a config it cannot build (so the test above means something)."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("receivers: {nosuchreceiver: {}}\nexporters: {otlphttp: {endpoint: http://x:1}}\n"
                   "service: {pipelines: {logs: {receivers: [nosuchreceiver], exporters: [otlphttp]}}}\n")
    out = subprocess.run([str(tools.otelcol), "validate", f"--config=file:{cfg}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
