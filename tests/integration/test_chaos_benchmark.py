"""``benchmarks/chaos.py`` runs and its counts hold: a quick baseline and a SIGKILL with the
persistent queue, real processes, every acknowledged record delivered and the sidecar healthy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

COLUMNS = ("scenario", "sent", "acknowledged", "delivered", "lost", "duplicated", "rss", "healthy", "note")


def test_quick_baseline_and_sigkill_with_the_persistent_queue_lose_nothing() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "benchmarks/chaos.py", "--quick", "--rate", "500", "--only", "baseline",
         "sigkill-persistent-queue"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0] in ("baseline", "sigkill-persistent-queue"):
            rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    assert set(rows) == {"baseline", "sigkill-persistent-queue"}, out
    for row in rows.values():
        acknowledged = int(row["acknowledged"].replace(",", ""))
        assert acknowledged > 1000, row
        assert row["delivered"] == row["acknowledged"] and row["lost"] == "0", row
        assert row["healthy"] == "yes", row
    assert "replayed" in rows["sigkill-persistent-queue"]["note"]
