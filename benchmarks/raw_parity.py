"""Raw-log parity: the raw-line path through ``otel-logbert serve`` gives the verdicts of key-session eval.

HDFS sessions of event ids (``train_normal.txt``, ``dev_normal.csv``, ``dev_abnormal.csv``) are rendered
back into raw HDFS lines: each event id N becomes a real line of template EN picked at random from
``../shared/datasets/hdfs_raw/`` (exemplars), its block id replaced by the session's. Then:

1. ``otel-logbert train --session-regex 'blk_-?\\d+'`` on the rendered training lines (the bundle carries
   the Drain3 state and the threshold, ``calibration`` as configured: pot by default);
2. key path: the rendered dev lines parsed with the bundle's parser into key sessions, written as CSVs
   and measured with ``otel-logbert eval``; each block's verdict is ``score > bundle threshold``;
3. raw path: the same lines sent over OTLP/gRPC to ``otel-logbert serve`` (``sessions.key: regex``), each
   block's verdict read from the forwarded records' ``log.anomaly.is_anomaly``.

Prints recall and FPR of both paths and the number of blocks whose verdicts disagree (labels for
measuring only). ``run_parity`` is what ``tests/integration/test_raw_parity.py`` calls on a subset.

Usage: benchmarks/raw_parity.py [--train-sessions N] [--dev-normal N] [--dev-abnormal N] [--out runs/raw_parity]
       [--train-arg=--calibration=max ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidecar_throughput import RECORDS_PER_REQUEST, CountingSink, Sidecar, send_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
BLOCK = re.compile(r"blk_-?\d+")
SESSION_REGEX = r"blk_-?\d+"
CONTENT = re.compile(r"^\d{6} \d{6} \d+ [A-Z]+ [\w.$]+: (.*)$")


def template_regexes(path: Path) -> dict[int, re.Pattern]:
    """Event id N -> a regex for template EN of ``event_templates.csv`` (``<*>`` = anything)."""
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            parts = [re.escape(p) for p in row["EventTemplate"].split("<*>")]
            out[int(row["EventId"][1:])] = re.compile("^" + ".*".join(parts) + "$")
    return out


def exemplars(raw_dir: Path, templates: dict[int, re.Pattern]) -> dict[int, list[str]]:
    """Event id -> the raw lines (with one block id) of ``raw_dir/*.log`` whose message matches only
    that template; at most 50 per event."""
    out: dict[int, list[str]] = {}
    for log in sorted(raw_dir.glob("*.log")):
        for line in log.read_text().splitlines():
            m = CONTENT.match(line)
            if m is None or len(set(BLOCK.findall(line))) != 1:
                continue
            hits = [n for n, rx in templates.items() if rx.match(m.group(1))]
            if len(hits) == 1 and len(out.setdefault(hits[0], [])) < 50 and line not in out[hits[0]]:
                out[hits[0]].append(line)
    return out


def lines_for_events(datasets: Path) -> tuple[dict[int, list[str]], list[int]]:
    """Exemplar lines for every event id of ``event_templates.csv``; a synthesized line
    (``synthesized``) for the events the samples lack, whose ids are returned too."""
    path = datasets / "hdfs" / "event_templates.csv"
    templates = template_regexes(path)
    found = exemplars(datasets / "hdfs_raw", templates)
    with path.open() as f:
        texts = {int(row["EventId"][1:]): row["EventTemplate"] for row in csv.DictReader(f)}
    missing = sorted(set(templates) - set(found))
    return found | {n: [synthesized(texts[n])] for n in missing}, missing


def synthesized(template: str) -> str:
    """A raw line for a template no sample line has: its first inner gap a block id, the others an
    address (a leading or trailing ``<*>`` stays empty)."""
    parts = template.split("<*>")
    text, inner = parts[0], 0
    for gap, part in enumerate(parts[1:], start=1):
        edge = (gap == 1 and parts[0] == "") or (gap == len(parts) - 1 and part == "")
        if not edge:
            text += " blk_1 " if inner == 0 else " 10.250.0.1:50010 "
            inner += 1
        text += part
    text = " ".join(text.split())
    return f"081109 203518 143 INFO dfs.DataNode: {text}" + ("" if "blk_" in text else " blk_1")


def render(sessions: list[tuple[str, list[str]]], lines_of: dict[int, list[str]], seed: int,
           interleave: int = 20) -> list[str]:
    """Raw lines for ``(block id, event ids)`` sessions: ``interleave`` blocks at a time are interleaved
    (each keeping its order), as a DataNode's log interleaves blocks. Raises ``KeyError`` naming an event
    with no exemplar."""
    rng = random.Random(seed)
    out: list[str] = []
    for start in range(0, len(sessions), interleave):
        group = [(block, [rng.choice(lines_of[int(e)]) for e in events])
                 for block, events in sessions[start : start + interleave]]
        cursors = [0] * len(group)
        while any(c < len(g[1]) for c, g in zip(cursors, group, strict=True)):
            i = rng.choice([i for i, (c, g) in enumerate(zip(cursors, group, strict=True)) if c < len(g[1])])
            block, rendered = group[i]
            out.append(BLOCK.sub(block, rendered[cursors[i]]))
            cursors[i] += 1
    return out


class VerdictSink(CountingSink):
    """The throughput benchmark's OTLP/gRPC downstream, keeping per session id the block and the verdict."""

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, bool, float]] = {}  # session id -> (block, is_anomaly, score)
        self.status: dict[str, int] = {}
        super().__init__()  # starts the server: the fields above must exist first

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        with self._lock:
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        self.records += 1
                        attrs = {a.key: a.value for a in record.attributes}
                        status = attrs["log.anomaly.status"].string_value if "log.anomaly.status" in attrs else "-"
                        self.status[status] = self.status.get(status, 0) + 1
                        if status != "scored":
                            continue
                        session = attrs["log.anomaly.session.id"].string_value
                        self.sessions[session] = (session.rsplit("/", 1)[0], attrs["log.anomaly.is_anomaly"].bool_value,
                                                  attrs["log.anomaly.score"].double_value)
        return b""


def requests_for(lines: list[str]) -> list[bytes]:
    """OTLP export requests of 512 records, bodies the raw lines, timestamps increasing."""
    out = []
    base = time.time_ns()
    for start in range(0, len(lines), RECORDS_PER_REQUEST):
        request = logs_service_pb2.ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = "hdfs-datanode"
        sl = rl.scope_logs.add()
        for i, line in enumerate(lines[start : start + RECORDS_PER_REQUEST], start=start):
            record = logs_pb2.LogRecord(time_unix_nano=base + i * 1000, severity_text="INFO", severity_number=9)
            record.body.string_value = line
            sl.log_records.append(record)
        out.append(request.SerializeToString())
    return out


def read_csv_sessions(path: Path) -> list[tuple[str, list[str]]]:
    with path.open() as f:
        return [(row["block_id"], row["sequence"].split()) for row in csv.DictReader(f)]


def run_parity(out: Path, *, train_sessions: int | None, dev_normal: int | None, dev_abnormal: int | None,
               train_args: list[str], seed: int = 0, datasets: Path = DATASETS) -> dict:
    """Train on rendered lines, then measure the key path and the raw path (module docstring)."""
    from otel_logbert.bundle import load_bundle
    from otel_logbert.parsing.drain import LogParser
    from otel_logbert.scoring.onnx import OnnxScorer

    out.mkdir(parents=True, exist_ok=True)
    hdfs = datasets / "hdfs"
    lines_of, synthesized_events = lines_for_events(datasets)
    train = [line.split() for line in (hdfs / "train_normal.txt").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    if train_sessions is not None:
        train = rng.sample(train, train_sessions)
    normal = read_csv_sessions(hdfs / "dev_normal.csv")
    abnormal = read_csv_sessions(hdfs / "dev_abnormal.csv")
    normal = rng.sample(normal, dev_normal) if dev_normal is not None else normal
    abnormal = rng.sample(abnormal, dev_abnormal) if dev_abnormal is not None else abnormal
    # training blocks get ids no dev block has
    train_lines = render([(f"blk_{9_100_000_000 + i}", s) for i, s in enumerate(train)], lines_of, seed)
    (out / "train.log").write_text("\n".join(train_lines) + "\n")
    cli = [sys.executable, "-m", "otel_logbert.cli"]
    started = time.perf_counter()
    subprocess.run([*cli, "train", "--model", "fastlogad", "--train", str(out / "train.log"), "--session-regex",
                    SESSION_REGEX, "--out", str(out / "bundle"), "--seed", str(seed), "--quiet", *train_args],
                   check=True, capture_output=True, text=True)
    train_seconds = time.perf_counter() - started
    bundle = load_bundle(out / "bundle", require_onnx=True)
    labels = {block: False for block, _ in normal} | {block: True for block, _ in abnormal}
    dev_lines = render(normal + abnormal, lines_of, seed + 1)
    (out / "dev.log").write_text("\n".join(dev_lines) + "\n")

    # key path: the bundle's parser, in sending order, then eval on CSVs of keys
    parser = LogParser.from_json(bundle.drain_state)
    keys: dict[str, list[str]] = {}
    for line in dev_lines:
        keys.setdefault(BLOCK.search(line).group(0), []).append(parser.parse(line).key)
    for name, label in (("normal", False), ("abnormal", True)):
        with (out / f"dev_{name}_keys.csv").open("w") as f:
            f.write("block_id,sequence\n")
            f.writelines(f"{b},{' '.join(k)}\n" for b, k in keys.items() if labels[b] is label)
    subprocess.run([*cli, "eval", "--bundle", str(out / "bundle"), "--normal", str(out / "dev_normal_keys.csv"),
                    "--abnormal", str(out / "dev_abnormal_keys.csv"), "--baseline", "none", "--no-save", "--json",
                    str(out / "eval.json")], check=True, capture_output=True, text=True)
    key_metrics = json.loads((out / "eval.json").read_text())
    blocks = list(keys)
    scores = OnnxScorer(bundle).score([bundle.vocab.encode(keys[b]) for b in blocks])
    key_verdicts = {b: r.score > bundle.static_threshold for b, r in zip(blocks, scores, strict=True)}

    # raw path: OTLP/gRPC into serve, verdicts from the forwarded records
    sink = VerdictSink()
    sidecar = Sidecar(out / "bundle", sink.port, out, inactivity_timeout_s=2.0, max_age_s=3600,
                      max_length=1_000_000)
    try:
        send_seconds, refusals = send_all(f"127.0.0.1:{sidecar.grpc_port}", requests_for(dev_lines))
        complete = sink.wait_for(len(dev_lines), timeout_s=300)
    finally:
        sidecar.stop()
        sink.stop()
    raw_verdicts: dict[str, bool] = {}
    sessions_per_block: dict[str, int] = {}
    for block, is_anomaly, _ in sink.sessions.values():
        raw_verdicts[block] = raw_verdicts.get(block, False) or is_anomaly
        sessions_per_block[block] = sessions_per_block.get(block, 0) + 1

    def rates(verdicts: dict[str, bool]) -> tuple[float, float]:
        anomalous = [verdicts.get(b, False) for b in blocks if labels[b]]
        normal_flags = [verdicts.get(b, False) for b in blocks if not labels[b]]
        return sum(anomalous) / max(len(anomalous), 1), sum(normal_flags) / max(len(normal_flags), 1)

    raw_recall, raw_fpr = rates(raw_verdicts)
    key_recall, key_fpr = rates(key_verdicts)
    return {
        "synthesized_events": synthesized_events, "blocks": len(blocks), "lines": len(dev_lines),
        "train_sessions": len(train), "train_lines": len(train_lines),
        "train_seconds": round(train_seconds, 1), "calibration": bundle.threshold.get("calibration"),
        "threshold": bundle.static_threshold, "delivered_records": sink.records, "complete": complete,
        "record_status": sink.status, "refusals": refusals, "send_seconds": round(send_seconds, 1),
        "blocks_scored": len(raw_verdicts), "blocks_split": sum(1 for n in sessions_per_block.values() if n > 1),
        "eval_recall": key_metrics["recall"], "eval_fpr": key_metrics["fpr"],
        "key_recall": key_recall, "key_fpr": key_fpr, "raw_recall": raw_recall, "raw_fpr": raw_fpr,
        "disagreements": sum(1 for b in blocks if raw_verdicts.get(b) != key_verdicts[b]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-sessions", type=int, default=None, help="random subset of train_normal.txt")
    p.add_argument("--dev-normal", type=int, default=None)
    p.add_argument("--dev-abnormal", type=int, default=None)
    p.add_argument("--train-arg", action="append", default=[], help="extra `train` argument (repeatable)")
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "raw_parity")
    args = p.parse_args()
    result = run_parity(args.out, train_sessions=args.train_sessions, dev_normal=args.dev_normal,
                        dev_abnormal=args.dev_abnormal, train_args=args.train_arg, datasets=args.datasets)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
