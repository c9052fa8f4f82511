"""The benchmark harness: a quick run end to end, and how it writes the report's tables.

No timing assertions: only that every section is measured and where the tables go.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"


def test_quick_bench_writes_results_and_tables(tmp_path: Path) -> None:
    """A quick run on SQLite with N=1,2 writes the JSON with every section, and a new
    report file with every table under its own marker."""
    out, md = tmp_path / "latest.json", tmp_path / "docs" / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--backends", "sqlite", "--ns", "1,2",
         "--sizes", "3", "--chain", "5", "--out", str(out), "--report", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
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
    text = md.read_text()
    for name in ("run", "machine", "start-sqlite", "overhead", "wakeup", "idle",
                 "per-migration", "connections"):
        assert f"<!-- bench:{name} -->" in text, name
    assert "| quick smoke run (not for quoting) |" in text
    assert "\n| 2 | 1 | " in text  # the herd-start row of N=2, one trial


def test_tables_replace_only_what_is_between_their_markers(tmp_path: Path) -> None:
    """Writing into an existing report changes the marked tables and keeps every
    hand-written line; the committed docs/benchmarks.md is exactly what its figures give."""
    md = tmp_path / "benchmarks.md"
    md.write_text("# Mine\n\nHand-written.\n\n<!-- bench:connections -->\nstale\n"
                  "<!-- /bench -->\n\nMore prose.\n")
    rewrite(md)
    text = md.read_text()
    assert text.startswith("# Mine\n\nHand-written.\n\n<!-- bench:connections -->\n| N |")
    assert "stale" not in text and text.endswith("<!-- /bench -->\n\nMore prose.\n")

    committed = ROOT / "docs" / "benchmarks.md"
    copy = tmp_path / "committed.md"
    copy.write_text(committed.read_text())
    rewrite(copy)
    assert copy.read_text() == committed.read_text()


def rewrite(md: Path) -> None:
    """``python -m bench --from-json`` with the committed figures, into ``md``."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--from-json", str(RESULTS),
                           "--report", str(md)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
