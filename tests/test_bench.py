"""The benchmark harness: a quick run end to end, and how it writes the report's tables.

No timing assertions: only that every section is measured and where the tables go.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

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


def bench(module: str) -> Any:
    """A module of bench/ (imported by name: bench/ is not under the strict type check)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"bench.{module}")


def rewrite(md: Path) -> None:
    """``python -m bench --from-json`` with the committed figures, into ``md``."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--from-json", str(RESULTS),
                           "--report", str(md)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_stampede_of_whole_processes_is_checked_in_the_database(
        embedded_postgres: URL, tmp_path: Path) -> None:
    """N=2 whole ``herd migrate`` processes (and each peer installed here) released at once
    behind the flock barrier on fresh databases: none fails, one herd process migrates,
    every process's CPU is measured, and the database holds each revision once. Control:
    the same check on a database where the data revision ran twice says so."""
    stampede = bench("stampede")
    backend = bench("backends").Backend("postgresql", "", "", embedded_postgres, tmp_path)
    result = stampede.run(backend, [2], 1, tmp_path, lambda _m: None)
    assert "herd" in result["tools"]
    for tool in result["tools"]:
        e = result["summary"]["2"][tool]
        assert (e["failures"], e["incorrect_trials"]) == (0, 0), (tool, e["first_error"])
        assert e["cpu_per_process_median"] > 0, tool
    herd = result["trials"]["2"]["herd"][0]
    assert herd["leader_cpu"] > 0 and herd["waiter_cpu_median"] > 0  # one leader was found

    # the control: migrated by herd, then the data revision's row once more
    where = stampede.write_projects(tmp_path / "control", tmp_path / "control-yoyo")
    (tmp_path / "control-run").mkdir()
    url = backend.create()
    argv, env = stampede.command("herd", url, where)
    subprocess.run(argv, env={**os.environ, **env}, check=True, capture_output=True)
    backend.query(url, "INSERT INTO settings (name, value) VALUES ('seeded', 'again') RETURNING id")
    control = stampede.trial("herd", 1, backend, where, tmp_path / "control-run", url=url)
    assert control["failures"] == 0 and control["seeded_rows"] == 2
    assert control["correct"] is False


def test_herd1000_through_pgbouncer_stays_within_the_pool(tmp_path: Path) -> None:
    """A small herd1000 run through PgBouncer with a pool of 2 and 6 waiters in 2
    processes: every waiter ends ready (no failure), the database at the second revision,
    and while they wait the server sees at most the pool plus the leader's four
    connections (its lock's, env.py's, its lock-wait watcher's and the fast lane's gate,
    held while the ``herd`` command's normal path runs); directly, the 6 waiters alone
    would hold 6."""
    herd1000 = bench("herd1000")
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    result = herd1000.run_mode("pgbouncer", waiters=6, procs=2, window=1.0,
                               max_connections=100, log=lambda _m: None, pool=2)
    assert result["failures"] == 0, result["errors"]
    assert result["leader_exit_code"] == 0 and result["heads"] == ["h2"]
    assert result["actions"]["waited"] == 6
    assert result["connections_window_max"] <= 2 + 4
    assert result["ready_after_leader_exit"]["count"] == 6
