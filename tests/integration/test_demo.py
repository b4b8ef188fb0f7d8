"""``otel-logbert demo`` end to end, small: the real sidecar process, the SDK exporter, the report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("demo") / "report"
    args = [sys.executable, "-m", "otel_logbert.cli", "demo", "--out", str(out), "--seed", "3",
            "--sessions", "120", "--train-sessions", "200", "--fault-rate", "0.2", "--epochs", "2",
            "--no-progress"]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    return out, done


def test_demo_exits_cleanly_and_prints_the_table(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, done = demo_run
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("precision", "recall", "records sent", "records/s", "unscored", "missing_step", "unseen_message"):
        assert line in done.stdout


def test_every_record_came_back_once_enriched(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    records = summary["records"]
    assert records["sent"] > 1000
    assert records["received"] == records["sent"]
    assert records["lost"] == 0 and records["duplicated"] == 0
    assert records["unscored"] == 0
    assert records["by_status"]["scored"] + records["by_status"].get("unsessioned", 0) == records["sent"]
    assert summary["sidecar_exit_code"] == 0 and summary["sdk_flushed"]
    # One session (and one span event) per trace.
    assert summary["traces"] == 120 and summary["sessions"] == 120
    assert summary["spans"]["received"] == 120 and summary["spans"]["in_demo_traces"] == 120


def test_summary_has_the_numbers(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faulty"] == 24 and summary["normal"] == 96
    assert set(summary["faults"]) == {"missing_step", "retry_storm", "reordering", "error_path", "unseen_message"}
    assert sum(f["sessions"] for f in summary["faults"].values()) == 24
    for key in ("precision", "recall", "f1", "flagged", "records_per_s", "threshold", "model_version"):
        assert key in summary
    assert 0.0 <= summary["precision"] <= 1.0 and 0.0 <= summary["recall"] <= 1.0
    assert summary["threshold"] == pytest.approx(summary["bundle_threshold"])
    assert summary["records_per_s"] > 0


def test_report_files(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    from otel_logbert.otlp.codec import decode_json

    out, _ = demo_run
    for name in ("logs.json", "spans.json", "summary.json", "scores.png", "README.md", "sessions.csv",
                 "sidecar.yaml", "bundle/model.onnx"):
        assert (out / name).is_file(), name
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # logs.json is OTLP/JSON the sidecar's own HTTP receiver accepts, with hex ids and the verdicts.
    request = decode_json((out / "logs.json").read_bytes())
    records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert len(records) == json.loads((out / "summary.json").read_text())["records"]["received"]
    keys = {kv.key for r in records for kv in r.attributes}
    assert {b"log.anomaly.score", b"log.anomaly.is_anomaly", b"log.record.template"} <= keys
    spans = json.loads((out / "spans.json").read_text())["resourceSpans"]
    span = spans[0]["scopeSpans"][0]["spans"][0]
    assert span["name"] == "log.anomaly.session" and len(span["traceId"]) == 32
    with open(out / "sessions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and {r["status"] for r in rows} == {"scored"}
