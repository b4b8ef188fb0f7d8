"""Drift benchmark in BERT-LogAnom's chronological protocol: train on an earlier period, test on the same
period and on a later one after a deploy; static threshold vs DTPM vs the semantic template mapping,
with and without each.

The system is the demo's simulated shop (``otel_logbert.simulate``), one session per trace:

* period 1 ("before"): normal training traffic (stream ``train``), then test traffic of the same release
  (stream ``before``, 10% injected faults);
* the deploy, applied to every trace of period 2 (stream ``after``, 10% faults), as a new release would:
  - rewords messages (``REWORDINGS``: same meaning, new words, so Drain3 makes new templates),
  - adds a step: checkout logs a fraud screening line after creating the order (``NEW_STEP``),
  - shifts the mix: half the browse and product traffic is gone (``MIX_SHIFT``), so checkout and cart
    weigh more.

The model (FastLogAD with the demo's settings, by default) is trained on period 1's normal traffic
only; its static threshold and DTPM come from its normal validation split; the semantic index from the
training templates. Test traffic is replayed through a copy of the trained parser, mining as the sidecar
does, in time order: period 1, then period 2, as one stream, so DTPM carries its state across the deploy
as a running sidecar would. Labels (the simulator's injected faults) are used for measuring only.

    .venv/bin/python benchmarks/dtpm_drift.py [--model fastlogad] [--epochs 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from otel_logbert.demo.training import DEMO_EPOCHS, DEMO_OVERRIDES, MASKING, sessions_of
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.semantic import MiniLMEncoder, SemanticKeyMapper, fit_bundle_index
from otel_logbert.scoring.dtpm import DTPMParams, DynamicThreshold
from otel_logbert.scoring.pytorch import TorchScorer
from otel_logbert.simulate import ServiceSystem, Trace
from otel_logbert.training.baselines import baseline_scores, fit_baselines
from otel_logbert.training.data import split_normal
from otel_logbert.training.trainer import train_model

# What the new release changes in its messages (same meaning, new words).
REWORDINGS: list[tuple[str, str]] = [
    (r"^token issued for (\S+) expires_in=", r"issued session token for \1 ttl="),
    (r"^cart updated for ", "cart changed for "),
    (r"^stock check (\S+) qty=", r"checking stock of \1 quantity="),
    (r"^creating order ", "create order "),
    (r"^tracking lookup order=", "looking up tracking for order="),
]
_COMPILED = [(re.compile(p), r) for p, r in REWORDINGS]
NEW_STEP = ("checkout", r"^create order (\S+) ", "fraud screening passed for order {order} risk_score=0.{n}")
MIX_SHIFT = {"browse": 0.5, "product": 0.5}  # share of these flows' traces kept after the deploy


def deploy(traces: list[Trace], seed: int) -> list[Trace]:
    """The new release: reworded messages, one new checkout step, fewer browse/product requests."""
    rng = np.random.default_rng(seed)
    out = []
    for trace in traces:
        if trace.fault is None and rng.random() > MIX_SHIFT.get(trace.flow, 1.0):
            continue  # the mix shifts; faulty traces all stay, so the anomaly count is the same
        records = []
        for record in trace.records:
            body = record.body
            for pattern, replacement in _COMPILED:
                body = pattern.sub(replacement, body)
            records.append(replace(record, body=body))
            service, after, template = NEW_STEP
            match = re.match(after, body) if record.service == service else None
            if match:
                records.append(replace(record, time_unix_nano=record.time_unix_nano + 1_000, body=template.format(
                    order=match.group(1), n=int(rng.integers(10, 99)))))
        out.append(replace(trace, records=records))
    return out


def metrics(flagged: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    tp, fp = int((flagged & bad).sum()), int((flagged & ~bad).sum())
    fn, tn = int((~flagged & bad).sum()), int((~flagged & ~bad).sum())
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fastlogad", choices=("fastlogad", "logbert", "loganom"))
    ap.add_argument("--train-traces", type=int, default=2000)
    ap.add_argument("--test-traces", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    system = ServiceSystem(seed=7)
    train_traces = system.traces(args.train_traces, "train")
    periods = {"before": system.traces(args.test_traces, "before", fault_rate=0.1),
               "after": deploy(system.traces(args.test_traces, "after", fault_rate=0.1), args.seed)}
    parser = LogParser(masking=MASKING)
    sessions = sessions_of(train_traces, parser)
    started = time.perf_counter()
    model, vocab, threshold, metadata = train_model(args.model, sessions, epochs=args.epochs, seed=args.seed,
                                                    overrides=DEMO_OVERRIDES, progress=False)
    train_s = time.perf_counter() - started
    scorer = TorchScorer(model.eval(), model_name=args.model, model_version="drift")
    state = parser.to_json()
    encoder = MiniLMEncoder()
    index = fit_bundle_index(state, vocab, sessions, encoder, val_fraction=metadata["training"]["val_fraction"],
                             seed=args.seed, quantile=threshold["quantile"])
    train_split, val_split = split_normal(sessions, metadata["training"]["val_fraction"], args.seed)
    stored = fit_baselines(train_split, val_split, vocab, threshold["quantile"])
    print(f"trained {args.model} on {len(sessions)} normal traces ({len(vocab.keys)} keys) in {train_s:.0f} s; "
          f"static threshold {threshold['threshold']:.4f}", file=sys.stderr)

    replay = LogParser.from_json(state)  # mining, as the sidecar does, in time order over both periods
    keys = {name: sessions_of(traces, replay) for name, traces in periods.items()}
    bad = {name: np.array([t.fault is not None for t in traces]) for name, traces in periods.items()}
    trained_templates = LogParser.from_json(state).templates()
    created = {k: t for k, t in replay.templates().items() if k not in trained_templates}
    generalised = {t: replay.templates()[k] for k, t in trained_templates.items() if replay.templates()[k] != t}
    mapper = SemanticKeyMapper(vocab, lambda: encoder, lambda _e: index)
    mapper.observe_all(created)
    assert mapper.wait(300), "semantic mapper did not finish"
    mapped = {d.template: (d.nearest_key, round(d.cosine, 3), d.mapped) for d in mapper.decisions.values()}

    rows = []
    for mapping, encode in (("off", vocab.encode), ("on", mapper.encode)):
        encoded = {name: [encode(s) for s in keys[name]] for name in periods}
        scores = {name: np.array([r.score for r in scorer.score(encoded[name])]) for name in periods}
        dtpm = DynamicThreshold(DTPMParams.from_json(threshold["dtpm"]))
        dynamic = {name: np.array([dtpm.update(float(s))[0] for s in scores[name]]) for name in periods}
        for policy in ("static", "dtpm"):
            for name in periods:
                limit = threshold["threshold"] if policy == "static" else dynamic[name]
                rows.append({"detector": args.model, "threshold": policy, "mapping": mapping, "period": name,
                             **metrics(scores[name] > limit, bad[name])})
        for baseline in ("new-event", "counts-pca"):
            for name in periods:
                s, limit = baseline_scores(baseline, encoded[name], len(vocab), stored)
                rows.append({"detector": baseline, "threshold": "static", "mapping": mapping, "period": name,
                             **metrics(s > limit, bad[name])})
    mapper.close()

    print("| detector | threshold | semantic mapping | period | precision | recall | FPR |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | {r['threshold']} | {r['mapping']} | {r['period']} | {r['precision']:.3f} "
              f"| {r['recall']:.3f} | {r['fpr']:.3f} |")
    print(f"\n{len(generalised)} training templates generalised by the replay (same key, so same token id):")
    for old, new in generalised.items():
        print(f"  {old!r} -> {new!r}")
    print(f"\n{len(created)} templates new in the test periods (nearest training template's key, cosine, mapped):")
    for template, decision in mapped.items():
        print(f"  {template!r}: {decision}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "seed": args.seed, "epochs": args.epochs, "train_traces": len(sessions),
            "test_traces": {n: len(t) for n, t in periods.items()}, "train_seconds": round(train_s, 1),
            "threshold": threshold["threshold"], "rewordings": REWORDINGS, "new_step": NEW_STEP[2],
            "mix_shift": MIX_SHIFT, "rows": rows, "semantic_decisions": mapped, "generalised": generalised,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
