"""Parsing accuracy on Loghub-2k: grouping accuracy (GA), parsing accuracy (PA) and lines/s per system.

Each system directory ``<loghub>/<System>/`` holds ``<System>_2k.log_structured_corrected.csv`` with the
columns ``Content``, ``EventId`` and ``EventTemplate`` (the corrected ground truth). The ``Content`` of
every line is parsed, in file order, by a fresh ``LogParser`` with the system's preset.

- GA (Loghub's definition): a message is correct when the set of messages sharing its predicted
  key equals the set of messages sharing its ground-truth ``EventId``.
- PA: a message is correct when its key's final template equals its ground-truth template, both
  normalised (every ``<NAME>`` mask and ``<*>`` read as ``<*>``, adjacent wildcards merged, spaces
  collapsed).
"""

from __future__ import annotations

import csv
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from otel_logbert.parsing.drain import LogParser

# Loghub-2k system -> masking preset. Systems without a preset of their own use "default".
SYSTEM_PRESETS: dict[str, str] = {
    "HDFS": "hdfs",
    "BGL": "bgl",
    "Thunderbird": "thunderbird",
    "OpenStack": "openstack",
    "Hadoop": "hadoop",
    "Spark": "spark",
    "Linux": "linux",
    "OpenSSH": "linux",
    "Proxifier": "proxifier",
    "Android": "android",
    "HPC": "hpc",
    "Mac": "mac",
}
LOGHUB_SYSTEMS: tuple[str, ...] = (
    "Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "HealthApp", "Linux",
    "Mac", "OpenSSH", "OpenStack", "Proxifier", "Spark", "Thunderbird", "Windows", "Zookeeper",
)  # fmt: skip


@dataclass(frozen=True)
class LoghubSystem:
    """One system's messages and their ground truth, in file order."""

    name: str
    contents: list[str]
    event_ids: list[str]
    templates: list[str]


@dataclass(frozen=True)
class SystemResult:
    system: str
    preset: str
    lines: int
    events: int  # ground-truth event types
    clusters: int  # predicted keys
    grouping_accuracy: float
    parsing_accuracy: float
    lines_per_s: float


def load_system(loghub_dir: str | Path, system: str) -> LoghubSystem:
    """Read ``<loghub_dir>/<system>/<system>_2k.log_structured_corrected.csv``. Raises ``OSError``."""
    path = Path(loghub_dir) / system / f"{system}_2k.log_structured_corrected.csv"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    return LoghubSystem(
        name=system,
        contents=[row["Content"] for row in rows],
        event_ids=[row["EventId"] for row in rows],
        templates=[row["EventTemplate"] for row in rows],
    )


def available_systems(loghub_dir: str | Path) -> list[str]:
    """The Loghub systems present under ``loghub_dir``, in ``LOGHUB_SYSTEMS`` order."""
    root = Path(loghub_dir)
    return [s for s in LOGHUB_SYSTEMS if (root / s / f"{s}_2k.log_structured_corrected.csv").is_file()]


def grouping_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of messages whose predicted group has exactly the members of their true group."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth must have the same length")
    if not truth:
        return 0.0
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(predicted):
        members[key].append(i)
    true_sizes: dict[str, int] = defaultdict(int)
    for event in truth:
        true_sizes[event] += 1
    correct = 0
    for indices in members.values():
        events = {truth[i] for i in indices}
        if len(events) == 1 and true_sizes[events.pop()] == len(indices):
            correct += len(indices)
    return correct / len(truth)


_MASK = re.compile(r"<[A-Z][A-Z0-9_]*>|<\*>")
_REPEATED_WILDCARD = re.compile(r"(?:<\*>){2,}")


def normalise_template(template: str) -> str:
    """Template with every mask as ``<*>``, adjacent wildcards merged and whitespace collapsed."""
    template = _MASK.sub("<*>", template)
    template = _REPEATED_WILDCARD.sub("<*>", template)
    return " ".join(template.split())


def parsing_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of messages whose normalised predicted template equals the normalised true one."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth must have the same length")
    if not truth:
        return 0.0
    same = sum(normalise_template(p) == normalise_template(t) for p, t in zip(predicted, truth, strict=True))
    return same / len(truth)


def bench_system(data: LoghubSystem, preset: str | None = None) -> SystemResult:
    """Parse ``data`` with a fresh parser (``preset`` defaults to the system's) and score it."""
    preset = preset or SYSTEM_PRESETS.get(data.name, "default")
    parser = LogParser(masking=preset)
    start = time.perf_counter()
    keys = [parser.parse(content).key for content in data.contents]
    elapsed = time.perf_counter() - start
    final = parser.templates()
    templates = [final.get(key, key) for key in keys]
    return SystemResult(
        system=data.name,
        preset=preset,
        lines=len(keys),
        events=len(set(data.event_ids)),
        clusters=len(set(keys)),
        grouping_accuracy=grouping_accuracy(keys, data.event_ids),
        parsing_accuracy=parsing_accuracy(templates, data.templates),
        lines_per_s=len(keys) / elapsed if elapsed > 0 else float("inf"),
    )


def run(loghub_dir: str | Path, systems: Sequence[str] | None = None) -> list[SystemResult]:
    """Bench ``systems`` (default: all present). Raises ``OSError`` when a system's file is missing."""
    return [bench_system(load_system(loghub_dir, s)) for s in systems or available_systems(loghub_dir)]


def summary(results: Sequence[SystemResult]) -> dict[str, float]:
    """Averages over systems (unweighted, as Loghub reports) and the worst GA."""
    n = max(len(results), 1)
    return {
        "grouping_accuracy": sum(r.grouping_accuracy for r in results) / n,
        "parsing_accuracy": sum(r.parsing_accuracy for r in results) / n,
        "lines_per_s": sum(r.lines_per_s for r in results) / n,
        "min_grouping_accuracy": min((r.grouping_accuracy for r in results), default=0.0),
    }


def format_table(results: Sequence[SystemResult]) -> str:
    """A fixed-width text table, one row per system and an average row."""
    header = f"{'system':<12} {'preset':<11} {'events':>6} {'keys':>5} {'GA':>6} {'PA':>6} {'lines/s':>9}"
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(
            f"{r.system:<12} {r.preset:<11} {r.events:>6} {r.clusters:>5} {r.grouping_accuracy:>6.3f}"
            f" {r.parsing_accuracy:>6.3f} {r.lines_per_s:>9.0f}"
        )
    avg = summary(results)
    rows.append("-" * len(header))
    rows.append(
        f"{'average':<12} {'':<11} {'':>6} {'':>5} {avg['grouping_accuracy']:>6.3f}"
        f" {avg['parsing_accuracy']:>6.3f} {avg['lines_per_s']:>9.0f}"
    )
    return "\n".join(rows)


def to_json(results: Sequence[SystemResult]) -> dict:
    """Results and averages as plain JSON data."""
    return {"systems": [asdict(r) for r in results], "average": summary(results)}
