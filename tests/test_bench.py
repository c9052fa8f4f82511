"""Smoke test of the benchmark harness (``python -m bench --quick``); no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_results_and_report(tmp_path: Path) -> None:
    """A quick run on SQLite with N=1,2 writes the JSON with every section and a report."""
    out, report = tmp_path / "latest.json", tmp_path / "docs" / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--backends", "sqlite", "--ns", "1,2",
         "--sizes", "3", "--chain", "5", "--out", str(out), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in ("run", "machine", "backends", "herd_start", "overhead", "wakeup", "connections",
                "idle_cost", "readiness", "per_migration", "interpreter"):
        assert key in results, key
    assert results["run"]["quick"] is True
    assert {"cpu_model", "cores", "memory_gib", "python"} <= results["machine"].keys()
    summary = results["herd_start"]["sqlite"]["summary"]
    assert set(summary) == {"1", "2"}
    assert {"herd", "herd_current", "alembic"} <= summary["2"].keys()
    herd = summary["2"]["herd"]
    assert herd["failures"] == 0 and herd["duplicates"] == 0
    assert {"3"} <= results["idle_cost"]["sqlite"].keys()
    assert results["per_migration"]["sqlite"]["revisions"] == 5
    text = report.read_text()
    assert "## 1. Herd start" in text and "## Findings" in text and "quick smoke run" in text
