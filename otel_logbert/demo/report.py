"""Judging the sidecar's verdicts against the simulator's ground truth, and writing the report folder.

``evaluate`` joins what came back from the sidecar (enriched OTLP requests, span events) with what
was sent (the simulated traces): per trace the session verdict, per fault type what was caught, and
whether every record came back exactly once. ``write_report`` writes:

- ``logs.json``: every enriched record as one OTLP/JSON ``ExportLogsServiceRequest``;
- ``spans.json``: the span events (spans ``log.anomaly.session``) as one OTLP/JSON trace request;
- ``sessions.csv``: one line per trace: flow, injected fault, score, verdict;
- ``summary.json``: the numbers of the table;
- ``scores.png``: score distributions of normal and faulty sessions with the threshold;
- ``README.md``: what each file is.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_logbert.simulate import FAULTS, SimRecord, Trace

PREFIX = "log.anomaly"
SPAN_NAME = "log.anomaly.session"


@dataclass
class TraceOutcome:
    """The verdict on one simulated trace. ``score`` is the highest of its sessions' scores (a
    trace is one session unless a close rule split it); ``status`` scored / unscored / missing."""

    trace_id: str
    flow: str
    fault: str | None
    detail: str
    records: int
    score: float | None = None
    flagged: bool = False
    status: str = "missing"
    sessions: int = 0


@dataclass
class Evaluation:
    """Everything the table and ``summary.json`` show."""

    outcomes: list[TraceOutcome]
    threshold: float | None
    records_sent: int
    records_received: int
    records_lost: int
    records_duplicated: int
    status_counts: dict[str, int]
    spans: int
    spans_in_known_traces: int
    fault_table: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def sessions(self) -> int:
        return sum(o.sessions for o in self.outcomes)

    @property
    def flagged(self) -> int:
        return sum(o.flagged for o in self.outcomes)

    @property
    def true_positives(self) -> int:
        return sum(o.flagged and o.fault is not None for o in self.outcomes)

    @property
    def false_positives(self) -> int:
        return sum(o.flagged and o.fault is None for o in self.outcomes)

    @property
    def faulty(self) -> int:
        return sum(o.fault is not None for o in self.outcomes)

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.faulty if self.faulty else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _record_key(trace_id: str, span_id: str, time_unix_nano: int, body: str) -> tuple[str, str, int, str]:
    return trace_id, span_id, time_unix_nano, body


def evaluate(
    traces: Sequence[Trace],
    background: Sequence[SimRecord],
    log_requests: Sequence[ExportLogsServiceRequest],
    trace_requests: Sequence[ExportTraceServiceRequest],
) -> Evaluation:
    """Compare what came back with what was sent. Never raises for missing or unexpected data:
    it is counted (``records_lost``, ``status`` "missing")."""
    sent: Counter[tuple[str, str, int, str]] = Counter()
    for trace in traces:
        for r in trace.records:
            sent[_record_key(f"{r.trace_id:032x}", f"{r.span_id:016x}", r.time_unix_nano, r.body)] += 1
    for r in background:
        sent[_record_key("", "", r.time_unix_nano, r.body)] += 1

    received: Counter[tuple[str, str, int, str]] = Counter()
    status_counts: Counter[str] = Counter()
    per_trace: dict[str, dict[str, Any]] = {}
    threshold: float | None = None
    for request in log_requests:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    trace_id = rec.trace_id.hex() if any(rec.trace_id) else ""
                    span_id = rec.span_id.hex() if any(rec.span_id) else ""
                    received[_record_key(trace_id, span_id, rec.time_unix_nano, rec.body.string_value)] += 1
                    attrs = {kv.key: _value(kv.value) for kv in rec.attributes}
                    status = str(attrs.get(f"{PREFIX}.status", "none"))
                    status_counts[status] += 1
                    if not trace_id:
                        continue
                    seen = per_trace.setdefault(trace_id, {"sessions": set(), "scores": [], "flagged": False,
                                                           "statuses": set()})
                    seen["statuses"].add(status)
                    session_id = attrs.get(f"{PREFIX}.session.id")
                    if session_id is not None:
                        seen["sessions"].add(session_id)
                    score = attrs.get(f"{PREFIX}.score")
                    if score is not None:
                        seen["scores"].append(float(score))
                    seen["flagged"] |= bool(attrs.get(f"{PREFIX}.is_anomaly", False))
                    if threshold is None and attrs.get(f"{PREFIX}.threshold") is not None:
                        threshold = float(attrs[f"{PREFIX}.threshold"])

    outcomes = []
    for trace in traces:
        o = TraceOutcome(trace.trace_id_hex, trace.flow, trace.fault, trace.fault_detail, len(trace.records))
        seen = per_trace.get(trace.trace_id_hex)
        if seen is not None:
            o.sessions = len(seen["sessions"])
            o.score = max(seen["scores"]) if seen["scores"] else None
            o.flagged = seen["flagged"]
            o.status = "scored" if seen["statuses"] == {"scored"} else "/".join(sorted(seen["statuses"]))
        outcomes.append(o)

    fault_table: dict[str, dict[str, int]] = {}
    for name in (*FAULTS, None):
        group = [o for o in outcomes if o.fault == name]
        fault_table[name or "normal"] = {"sessions": len(group), "flagged": sum(o.flagged for o in group)}

    known = {t.trace_id_hex for t in traces}
    span_traces = [span.trace_id.hex() for r in trace_requests for rs in r.resource_spans
                   for ss in rs.scope_spans for span in ss.spans if span.name == SPAN_NAME]
    return Evaluation(
        outcomes=outcomes,
        threshold=threshold,
        records_sent=sum(sent.values()),
        records_received=sum(received.values()),
        records_lost=sum((sent - received).values()),
        records_duplicated=sum((received - sent).values()),
        status_counts=dict(status_counts),
        spans=len(span_traces),
        spans_in_known_traces=sum(t in known for t in span_traces),
        fault_table=fault_table,
    )


# --- the table ---------------------------------------------------------------------------------------


def format_table(ev: Evaluation, info: dict[str, Any]) -> str:
    """The demo's result table as text (``info``: model, model_version, records_per_s, seconds...)."""
    lines = [
        f"otel-logbert demo: {info['model']} bundle {info['model_version']}, "
        f"threshold {ev.threshold if ev.threshold is not None else float('nan'):.4f} (from normal validation data)",
        "",
        f"  {'traces (sessions)':<26}{len(ev.outcomes):>8}   sessions at the sidecar: {ev.sessions}",
        f"  {'flagged anomalous':<26}{ev.flagged:>8}",
        "",
        f"  {'injected truth':<26}{'sessions':>8}{'flagged':>9}{'rate':>8}",
    ]
    for name, row in ev.fault_table.items():
        rate = row["flagged"] / row["sessions"] if row["sessions"] else 0.0
        label = f"{name} (false alarms)" if name == "normal" else name
        lines.append(f"  {label:<26}{row['sessions']:>8}{row['flagged']:>9}{rate:>8.3f}")
    lines += [
        f"  {'all faults':<26}{ev.faulty:>8}{ev.true_positives:>9}{ev.recall:>8.3f}",
        "",
        f"  precision {ev.precision:.3f}   recall {ev.recall:.3f}   F1 {ev.f1:.3f}",
        "",
        f"  records sent {ev.records_sent}, received {ev.records_received} "
        f"(lost {ev.records_lost}, duplicated {ev.records_duplicated})",
        "  record status: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.status_counts.items()))
        + f"   (unscored {ev.status_counts.get('unscored', 0)})",
        f"  throughput {info['records_per_s']:,.0f} records/s end to end (first record sent to last enriched "
        f"record back, {info['stream_seconds']:.1f} s, incl. the {info['inactivity_timeout_s']:g} s session "
        "close wait)",
        f"  span events {ev.spans} ({ev.spans_in_known_traces} in the demo's traces)",
    ]
    return "\n".join(lines)


# --- files -------------------------------------------------------------------------------------------


def _hex_ids(node: Any) -> Any:
    """proto3 JSON writes bytes as base64; OTLP/JSON writes trace and span ids as hex."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node


def otlp_json(requests: Sequence[Any], field_name: str) -> dict[str, Any]:
    """One OTLP/JSON request holding the ``resourceLogs`` / ``resourceSpans`` of all ``requests``."""
    merged: list[Any] = []
    for request in requests:
        merged.extend(_hex_ids(MessageToDict(request, use_integers_for_enums=True)).get(field_name, []))
    return {field_name: merged}


def plot_scores(ev: Evaluation, path: Path) -> None:
    """Histogram of normal vs faulty session scores (log x axis) and one strip per fault type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import NullFormatter

    scored = [o for o in ev.outcomes if o.score is not None]
    normal = np.array([o.score for o in scored if o.fault is None], dtype=float)
    faulty = np.array([o.score for o in scored if o.fault is not None], dtype=float)
    values = np.concatenate([normal, faulty]) if len(scored) else np.array([1.0])
    low, high = max(float(values.min()), 1e-6), max(float(values.max()), 1e-5)
    wide = high / low > 20  # a log axis only where scores span orders of magnitude
    bins = np.geomspace(low * 0.9, high * 1.1, 50) if wide else np.linspace(low * 0.98, high * 1.02, 50)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    left.hist(normal, bins=bins, alpha=0.6, label=f"normal ({len(normal)})", color="tab:blue")
    left.hist(faulty, bins=bins, alpha=0.7, label=f"injected fault ({len(faulty)})", color="tab:red")
    right_rows = [name for name in FAULTS if any(o.fault == name for o in scored)]
    for i, name in enumerate(["normal", *right_rows]):
        ys = [o.score for o in scored if (o.fault or "normal") == name]
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, len(ys))
        right.scatter(ys, i + jitter, s=6, alpha=0.5, color="tab:blue" if name == "normal" else "tab:red")
    right.set_yticks(range(len(right_rows) + 1), ["normal", *right_rows])
    for ax in (left, right):
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if ev.threshold is not None:
            ax.axvline(ev.threshold, color="black", linestyle="--", linewidth=1,
                       label=f"threshold {ev.threshold:.3g}")
        ax.set_xlabel("session score (log scale)" if wide else "session score")
    left.set_yscale("log")
    left.set_ylabel("sessions")
    left.set_title(f"score distributions: precision {ev.precision:.3f}, recall {ev.recall:.3f}")
    right.set_title("scores by injected fault type")
    left.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README = """# otel-logbert demo report

Produced by `otel-logbert demo` (`make demo`): a simulated OpenTelemetry-instrumented shop sent a
mixed stream of normal requests and requests with injected faults through the real `otel-logbert
serve` sidecar, whose output came back to a local OTLP receiver.

- `logs.json`: every enriched log record as it left the sidecar, as one OTLP/JSON
  `ExportLogsServiceRequest` (`resourceLogs`). The verdict is in the `log.anomaly.*` attributes
  (score, threshold, is_anomaly, session id and length, status, per-record `unexpected`), the Drain3
  template in `log.record.template`.
- `spans.json`: the span events, one span `log.anomaly.session` per scored session in the session's
  own trace, carrying an event `log.anomaly` (OTLP/JSON `ExportTraceServiceRequest`).
- `sessions.csv`: one line per simulated request (trace): flow, injected fault (empty = normal) and
  what exactly it did, score, verdict.
- `summary.json`: the numbers of the printed table: sessions, flagged, faults caught per type,
  precision/recall, records sent/received/lost, records/s, unscored records, timings.
- `scores.png`: score distributions of normal and faulty sessions, with the bundle's threshold.
- `bundle/`: the model bundle trained on the normal traffic only (`otel-logbert serve --bundle ...`).
- `sidecar.yaml`, `sidecar.log`: the sidecar's configuration and its output.

The threshold comes from the bundle (the largest score of held-out *normal* validation sessions); the
injected faults were used only to count what was caught.

Fault types (see `otel_logbert/simulate.py`): `missing_step` (a step that always happens is skipped),
`retry_storm` (6-12 retries where normal traffic has 0-2), `reordering` (steps in the wrong order),
`error_path` (a failure deep in the call chain propagates to an HTTP 5xx), `unseen_message` (one
message never seen in normal traffic). Faults that change only values (latency, amounts) are
invisible to a session model after masking and are not injected.
"""


def write_report(out: Path, ev: Evaluation, info: dict[str, Any],
                 log_requests: Sequence[ExportLogsServiceRequest],
                 trace_requests: Sequence[ExportTraceServiceRequest]) -> dict[str, Any]:
    """Write the report files into ``out`` (which must exist); returns the summary dict."""
    (out / "logs.json").write_text(json.dumps(otlp_json(log_requests, "resourceLogs")))
    (out / "spans.json").write_text(json.dumps(otlp_json(trace_requests, "resourceSpans")))
    with open(out / "sessions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trace_id", "flow", "fault", "fault_detail", "records", "sessions", "status", "score",
                         "flagged"])
        for o in ev.outcomes:
            writer.writerow([o.trace_id, o.flow, o.fault or "", o.detail, o.records, o.sessions, o.status,
                             "" if o.score is None else f"{o.score:.6f}", int(o.flagged)])
    summary = summary_dict(ev, info)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_scores(ev, out / "scores.png")
    (out / "README.md").write_text(README)
    return summary


def summary_dict(ev: Evaluation, info: dict[str, Any]) -> dict[str, Any]:
    faults = {name: {**row, "caught": row["flagged"]} for name, row in ev.fault_table.items() if name != "normal"}
    return {
        **info,
        "threshold": ev.threshold,
        "sessions": ev.sessions,
        "traces": len(ev.outcomes),
        "flagged": ev.flagged,
        "faulty": ev.faulty,
        "normal": ev.fault_table.get("normal", {}).get("sessions", 0),
        "true_positives": ev.true_positives,
        "false_positives": ev.false_positives,
        "precision": round(ev.precision, 4),
        "recall": round(ev.recall, 4),
        "f1": round(ev.f1, 4),
        "faults": faults,
        "records": {
            "sent": ev.records_sent,
            "received": ev.records_received,
            "lost": ev.records_lost,
            "duplicated": ev.records_duplicated,
            "unscored": ev.status_counts.get("unscored", 0),
            "by_status": ev.status_counts,
        },
        "spans": {"received": ev.spans, "in_demo_traces": ev.spans_in_known_traces},
        "unscored_traces": [asdict(o) for o in ev.outcomes if o.status != "scored"][:20],
    }
