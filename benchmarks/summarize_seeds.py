"""Print the runs of ``benchmarks/hdfs_seeds.sh`` as a Markdown table: one row per model, rule and seed,
then per model and rule the minimum and median of f1_paper_mix and AUPR.

Usage: benchmarks/summarize_seeds.py runs/seeds
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(root: str) -> None:
    rows = []
    for run in sorted(Path(root).iterdir()):
        if not (run / "eval.json").exists():
            continue
        m = json.loads((run / "eval.json").read_text())
        train = json.loads((run / "train.json").read_text())
        model, rule, seed = run.name.rsplit("-", 2)
        target = train.get("target_fpr") if rule == "pot" else None
        wall = (run / "wall_seconds").read_text().strip() if (run / "wall_seconds").exists() else "-"
        rows.append((model, rule, int(seed), m, train, target, wall))
    print("| model | rule | seed | threshold | recall | FPR (target) | precision | f1_paper_mix | AUROC | AUPR "
          "| train s (loops) | train s (wall) |")
    print("|---" * 12 + "|")
    for model, rule, seed, m, train, target, wall in sorted(rows, key=lambda r: r[:3]):
        fpr = f"{m['fpr']:.4f}" + (f" ({target:g})" if target else "")
        print(f"| {model} | {rule} | {seed} | {m['threshold']:.4g} | {m['recall']:.4f} | {fpr} | {m['precision']:.4f} "
              f"| {m['f1_paper_mix']:.4f} | {m['auroc']:.4f} | {m['aupr']:.4f} | {train['train_seconds']} | {wall} |")
    print()
    print("| model | rule | seeds | f1_paper_mix min / median | AUPR min | FPR within 2x of target |")
    print("|---" * 6 + "|")
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault(row[:2], []).append(row)
    for (model, rule), group in sorted(groups.items()):
        f1 = [r[3]["f1_paper_mix"] for r in group]
        within = [r[5] / 2 <= r[3]["fpr"] <= r[5] * 2 for r in group if r[5]]
        print(f"| {model} | {rule} | {len(group)} | {min(f1):.4f} / {statistics.median(f1):.4f} "
              f"| {min(r[3]['aupr'] for r in group):.4f} | {f'{sum(within)} of {len(within)}' if within else '-'} |")


if __name__ == "__main__":
    main(sys.argv[1])
