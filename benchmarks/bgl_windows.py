"""Time-window systems end to end on the one BGL data here: every model and baseline, tumbling and sliding.

* Train: ``../shared/datasets/bgl_raw/BGL_5000.log`` (5,001 lines, 35 minutes of one day, no alert line),
  ``train --window SPEC --content-regex bgl --masking bgl`` for each model (packaged defaults; thresholds
  from the normal validation split of these windows; no label anywhere).
* Test: ``BGL_2k.log`` (1,999 lines sampled over seven months, 143 alert lines). Its lines are parsed by a
  copy of the bundle's Drain3 state, mining as the sidecar does (new messages become new keys, which the
  vocabulary maps to UNK), and windowed with the same spec. A window is anomalous when it holds an alert
  line (first field not ``-``; the label field never reaches the parser). The windows are written as
  ``normal.csv`` / ``abnormal.csv`` and measured by ``otel-logbert eval`` (model row + baselines).

    .venv/bin/python benchmarks/bgl_windows.py [--out runs/bgl] [--specs 20 20/5 300s/60s] [--models ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from otel_logbert.bundle import load_bundle
from otel_logbert.cli import main as cli
from otel_logbert.parsing.drain import LogParser
from otel_logbert.parsing.windows import WindowSpec, window_sessions

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bgl_raw"
SPECS = ("20", "20/5", "300s/60s")
MODELS = ("fastlogad", "logbert", "loganom")
DETECTORS = ("new-event", "counts-pca")


def is_alert(line: str) -> bool:
    return not line.startswith("- ")


def write_test_windows(bundle_dir: Path, spec: str, out: Path) -> dict[str, int]:
    """BGL_2k windows keyed by a copy of the bundle's parser -> out/normal.csv, out/abnormal.csv."""
    bundle = load_bundle(bundle_dir)
    parser = LogParser.from_json(bundle.drain_state)
    lines = (DATA / "BGL_2k.log").read_text().splitlines()
    windows = window_sessions(lines, WindowSpec.parse(spec), lambda m: parser.parse(m).key, "bgl",
                              "bgl" if spec.endswith("s") else None)
    rows = {"normal": [], "abnormal": []}
    for w in windows:
        label = "abnormal" if any(is_alert(lines[i]) for i in w.lines) else "normal"
        rows[label].append(f"w{w.start:.10g},{' '.join(w.keys)}")
    for label, items in rows.items():
        (out / f"{label}.csv").write_text("id,sequence\n" + "\n".join(items) + "\n")
    unseen = sum(1 for w in windows for k in w.keys if k not in bundle.vocab)
    return {"normal_windows": len(rows["normal"]), "abnormal_windows": len(rows["abnormal"]),
            "keys": sum(len(w.keys) for w in windows), "unseen_keys": unseen,
            "train_templates": len(bundle.vocab.keys), "templates_after_test": len(parser.templates())}


def quiet(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(argv)
    if code != 0:
        raise SystemExit(f"otel-logbert {' '.join(argv)}: exit {code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bgl"))
    ap.add_argument("--specs", nargs="+", default=list(SPECS))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = []
    for spec in args.specs:
        for model in args.models:
            run = args.out / spec.replace("/", "-") / model
            run.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            argv = ["train", "--model", model, "--train", str(DATA / "BGL_5000.log"), "--window", spec,
                    "--content-regex", "bgl", "--masking", "bgl", "--out", str(run / "bundle"), "--quiet",
                    "--seed", str(args.seed)]
            if spec.endswith("s"):
                argv += ["--timestamp-regex", "bgl"]
            quiet(argv)
            seconds = time.perf_counter() - started
            counts = write_test_windows(run / "bundle", spec, run)
            quiet(["eval", "--bundle", str(run / "bundle"), "--normal", str(run / "normal.csv"),
                   "--abnormal", str(run / "abnormal.csv"), "--json", str(run / "eval.json"), "--no-save"])
            metrics = json.loads((run / "eval.json").read_text())
            meta = load_bundle(run / "bundle").metadata
            results.append({"spec": spec, "model": model, "train_windows": meta["sessions_in_file"],
                            "train_seconds": round(seconds, 1), **counts,
                            "rows": {name: m for name, m in [(model, metrics), *metrics["baselines"].items()]}})
            print(f"{spec} {model}: trained in {seconds:.0f} s", flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    print("\n| windows | train windows | test normal / anomalous | detector | precision | recall | FPR | AUROC |")
    print("|---|---|---|---|---|---|---|---|")
    seen_baselines: set[str] = set()
    for r in results:
        for name, m in r["rows"].items():
            if name in DETECTORS:
                if (r["spec"], name) in seen_baselines:
                    continue  # the baselines do not depend on the model: print them once per spec
                seen_baselines.add((r["spec"], name))
            print(f"| {r['spec']} | {r['train_windows']} | {r['normal_windows']} / {r['abnormal_windows']} | {name} | "
                  f"{m['precision']:.3f} | {m['recall']:.3f} | {m['fpr']:.3f} | {m['auroc']:.3f} |")
    for r in results[:: len(args.models)]:
        print(f"{r['spec']}: {r['train_templates']} training templates; the test windows hold {r['keys']} keys, "
              f"{r['unseen_keys']} of them never seen in training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
