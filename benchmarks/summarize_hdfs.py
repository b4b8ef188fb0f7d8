"""Print the eval table of ``benchmarks/hdfs_models.sh`` as Markdown: one row per model and policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("precision", "recall", "f1", "fpr", "auroc", "aupr", "f1_paper_mix", "threshold", "sessions_per_second")


def main(root: str) -> None:
    print("| model | threshold | " + " | ".join(COLUMNS) + " | train s |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    baselines: dict[str, dict] = {}
    for run in sorted(Path(root).iterdir()):
        train = json.loads((run / "train.json").read_text())
        for name in ("eval.json", "eval-dtpm.json"):
            if not (run / name).exists():
                continue
            m = json.loads((run / name).read_text())
            cells = [f"{m[c]:.4f}" if isinstance(m[c], float) else str(m[c]) for c in COLUMNS]
            print(f"| {run.name} | {m['threshold_policy']} | " + " | ".join(cells) + f" | {train['train_seconds']} |")
            baselines.update(m.get("baselines", {}))
    for name, m in baselines.items():  # the same for every model trained on the same file and seed
        cells = [f"{m[c]:.4f}" if isinstance(m[c], float) else str(m[c]) for c in COLUMNS]
        print(f"| baseline: {name} | static | " + " | ".join(cells) + " | - |")


if __name__ == "__main__":
    main(sys.argv[1])
