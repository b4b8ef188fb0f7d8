"""The demo, end to end: simulate, train, serve, stream, judge, report.

1. simulate the shop's normal traffic (``train_sessions`` traces) and a mixed live stream
   (``sessions`` traces, ``fault_rate`` of them with injected faults, plus a few untraced lines);
2. train a bundle on the normal traffic only and export it to ONNX (``<out>/bundle``);
3. start a local OTLP receiver and the real ``otel-logbert serve`` process pointed at it;
4. send the live stream through opentelemetry-sdk's OTLP log exporter to the sidecar and wait until
   every record came back enriched (counted), then stop the sidecar (SIGTERM flushes span events);
5. compare the verdicts with the injected truth, print the table and write the report folder.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from otel_logbert.demo.process import INACTIVITY_TIMEOUT_S, SidecarProcess
from otel_logbert.demo.receiver import OtlpReceiver
from otel_logbert.demo.report import evaluate, format_table, write_report
from otel_logbert.demo.sender import send_records
from otel_logbert.demo.training import train_bundle
from otel_logbert.errors import UserError
from otel_logbert.simulate import ServiceSystem, interleave

log = logging.getLogger(__name__)

# How long to wait for the enriched stream after the last record was sent: sessions close after
# INACTIVITY_TIMEOUT_S, then they are scored and forwarded.
RETURN_TIMEOUT_S = 120.0


@dataclass
class DemoOptions:
    """What ``otel-logbert demo`` runs. ``epochs`` None = the model config's default schedule."""

    out: Path = Path("demo-report")
    seed: int = 7
    sessions: int = 1500  # traces in the live (mixed) stream
    train_sessions: int = 2000  # normal traces to train on
    fault_rate: float = 0.12
    model: str = "fastlogad"
    epochs: int | None = None
    progress: bool = True


def run_demo(options: DemoOptions, echo: Any = print) -> dict[str, Any]:
    """Run the demo; ``echo`` prints progress lines and the table. Returns the summary dict (also
    in ``<out>/summary.json``). Raises ``UserError`` when the sidecar cannot start or records do
    not come back (the report is still written with what arrived)."""
    started = time.monotonic()
    out = options.out
    if options.sessions < 1 or options.train_sessions < 2:
        raise UserError("--sessions must be >= 1 and --train-sessions >= 2")
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / "bundle"
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)

    system = ServiceSystem(seed=options.seed, start_unix_nano=time.time_ns() // 1_000_000_000 * 1_000_000_000)
    train = system.traces(options.train_sessions, stream="train")
    live = system.traces(options.sessions, stream="live", fault_rate=options.fault_rate)
    background = system.background(live)
    stream = list(interleave(live, background))
    n_faulty = sum(t.fault is not None for t in live)
    echo(f"simulated {len(train)} normal traces ({sum(len(t.records) for t in train)} records) to train on; "
         f"live stream: {len(live)} traces, {n_faulty} with injected faults, {len(stream)} records")

    bundle = train_bundle(train, bundle_dir, options.model, seed=options.seed, epochs=options.epochs,
                          progress=options.progress)
    echo(f"trained {bundle.model} on {bundle.sessions} normal sessions ({bundle.templates} templates) in "
         f"{bundle.train_seconds:.1f} s, exported ONNX in {bundle.export_seconds:.1f} s; "
         f"threshold {bundle.threshold:.4f} from normal validation sessions")

    with OtlpReceiver() as receiver:
        with SidecarProcess(bundle.path, forward=receiver.endpoint, workdir=out) as sidecar:
            echo(f"sidecar ready on {sidecar.grpc_endpoint} (forward + span events -> {receiver.endpoint})")
            sent = send_records(stream, sidecar.grpc_endpoint, total=len(stream), progress=options.progress)
            complete = receiver.wait_until_records(sent.sent, timeout_s=RETURN_TIMEOUT_S)
            back_at = receiver.last_at or time.monotonic()
        exit_code = sidecar.returncode
        receiver.wait_quiet(quiet_s=0.5, timeout_s=10.0)  # span events flushed at shutdown
        log_requests, trace_requests = receiver.log_requests(), receiver.trace_requests()

    stream_seconds = max(back_at - sent.started_at, 1e-9)
    ev = evaluate(live, background, log_requests, trace_requests)
    info = {
        "seed": options.seed,
        "model": bundle.model,
        "model_version": bundle.model_version,
        "bundle_threshold": bundle.threshold,
        "train": {"sessions": bundle.sessions, "templates": bundle.templates,
                  "seconds": round(bundle.train_seconds, 2), "export_seconds": round(bundle.export_seconds, 2),
                  "epochs": bundle.metadata.get("epochs")},
        "records_per_s": round(ev.records_received / stream_seconds, 1),
        "stream_seconds": round(stream_seconds, 3),
        "send_seconds": round(sent.seconds, 3),
        "inactivity_timeout_s": INACTIVITY_TIMEOUT_S,
        "sdk_flushed": sent.flushed,
        "sidecar_exit_code": exit_code,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    echo("")
    echo(format_table(ev, info))
    info["wall_seconds"] = round(time.monotonic() - started, 1)
    summary = write_report(out, ev, info, log_requests, trace_requests)
    echo(f"\nreport written to {out}/ (README.md tells what each file is); {info['wall_seconds']:.0f} s in all")
    if not complete or ev.records_lost:
        raise UserError(f"{ev.records_lost} of {ev.records_sent} records did not come back from the sidecar "
                        f"within {RETURN_TIMEOUT_S:.0f} s (see {out}/sidecar.log)")
    return summary
