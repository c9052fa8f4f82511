"""Scenario 1: the leader is SIGKILLed at a random point of a four-revision migration.

PostgreSQL (transactional DDL, one transaction or transaction_per_migration): every
survivor ends ready, the schema is at head, each data migration's row is there once, each
revision's committed marks are there once, no two processes' committed runs overlap, and
the history tells what happened (the killed attempt 'interrupted' / 'rolled back').

MariaDB (DDL is not transactional): a kill inside a revision leaves it half-applied; every
survivor stops with IncompleteRevisionError naming it, nothing after it runs and it is not
run again; a kill between revisions leaves nothing to repair and the survivors finish.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from .conftest import MysqlFixture, PostgresFixture
from .trials import (
    BOUND,
    REVISIONS,
    Herd,
    check_consistent,
    history_overlaps,
    holder_pid,
    inspect_database,
    kill,
    leaks,
    percentile,
    record,
    rows,
)

REPLICAS = 5
STEP = 0.25  # seconds each revision sleeps: the migration takes about 4 * STEP
SEED = 20261129


def wait_for_holder(admin: Any, herd: Herd) -> int | None:
    """The pid of the first replica seen holding the lock (None: all finished first)."""
    until = time.monotonic() + BOUND
    while time.monotonic() < until:
        pid = holder_pid(admin)
        if pid is not None:
            return pid
        if all(r.proc.poll() is not None for r in herd.replicas):
            return None
        time.sleep(0.01)
    raise AssertionError("no replica took the lock")


def where_killed(history: list[dict[str, Any]], victim: int, versions: list[str]) -> str:
    """Where the kill landed, from what the history says about the victim's attempt."""
    mine = [h for h in history if h["pid"] == victim]
    if not mine:
        return "before its first revision"
    for h in mine:
        if h["status"] == "interrupted":
            return f"inside {h['revision']}"
        if h["status"] == "running":
            return f"after committing {h['revision']}, before recording it"
    last = mine[-1]["revision"]
    if all(h["status"] == "applied" for h in mine) and versions == ["m4"] and last == "m4":
        return "after its last revision"
    return f"between revisions, after {last}"


def run_pg_trial(fault_pg: PostgresFixture, rng: random.Random, tpm: bool, secret: str
                 ) -> dict[str, Any]:
    with fault_pg.database() as url:
        admin = fault_pg.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        for _ in range(REPLICAS):
            herd.add("herd", url, "--timeout", "120")
        herd.release()
        first = wait_for_holder(admin, herd)
        delay = rng.uniform(0.0, 4 * STEP + 0.2)
        time.sleep(delay)
        victim = holder_pid(admin)
        killed_at = time.time()
        if victim is not None:
            kill(victim)
        replicas = herd.finish()
        facts = inspect_database(url)
        stopped = {victim} if victim is not None else set()
        problems = check_consistent(facts, stopped=stopped)
        problems += history_overlaps(facts.history)
        survivors = [r for r in replicas if r.pid != victim]
        problems += [f"survivor {r.pid} exited {r.returncode}: {r.report} {r.stderr[-800:]}"
                     for r in survivors if r.returncode != 0]
        if victim is not None:
            mine = [h for h in facts.history if h["pid"] == victim]
            in_table = set(facts.versions or [])
            problems += [f"the killed leader's {h['revision']} is still 'running'"
                         for h in mine if h["status"] == "running"
                         and h["revision"] not in in_table]
        finished = [r.report.get("finished", killed_at) for r in survivors]
        return {
            "tpm": tpm, "delay": round(delay, 3), "first_leader": first, "victim": victim,
            "where": where_killed(facts.history, victim, facts.versions or [])
            if victim is not None else "no kill: the migration finished first",
            "actions": dict(Counter(r.report.get("action", r.report.get("type"))
                                    for r in survivors)),
            "recovery_seconds": round(max(finished) - killed_at, 3) if victim else None,
            "statuses": [(h["revision"], h["status"], h["pid"] == victim)
                         for h in facts.history],
            "problems": problems,
            "leaks": leaks(secret, herd.outputs),
        }


@pytest.mark.parametrize("trials", [pytest.param(4, id="fast"),
                                    pytest.param(50, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_postgresql_leader_killed_at_random_points(trials: int, fault_pg: PostgresFixture,
                                                    secret: str) -> None:
    """A PostgreSQL leader SIGKILLed at a random point leaves every survivor ready, the
    schema at head, each data migration applied once, no overlapping runs, and a history
    that marks the killed attempt interrupted / rolled back."""
    rng = random.Random(SEED + trials)
    results = [run_pg_trial(fault_pg, rng, tpm=n % 2 == 1, secret=secret)
               for n in range(trials)]
    failed = [r for r in results if r["problems"] or r["leaks"]]
    recovery = [r["recovery_seconds"] for r in results if r["recovery_seconds"] is not None]
    record(f"killed-leader-postgresql-{'full' if trials > 10 else 'fast'}", {
        "backend": "postgresql (the suite's own server, SCRAM password)",
        "replicas": REPLICAS, "revisions": len(REVISIONS), "step_seconds": STEP,
        "trials": trials, "failures": len(failed),
        "kills": sum(r["victim"] is not None for r in results),
        "where": dict(Counter(r["where"] for r in results)),
        "recovery_seconds": {"median": percentile(recovery, 0.5),
                             "p95": percentile(recovery, 0.95), "max": max(recovery or [0])},
        "checks": ["every survivor exit 0", "version table at m4",
                   "data migrations' rows once each", "each revision's committed marks once",
                   "no overlapping committed runs (marks) or attempts (history)",
                   "killed attempt reconciled: no 'running' row for an unapplied revision",
                   "password never printed"],
        "trials_detail": results,
    })
    assert not failed, failed


def run_mariadb_trial(mariadb: MysqlFixture, rng: random.Random, secret: str
                      ) -> dict[str, Any]:
    with mariadb.database() as url:
        admin = mariadb.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP)})
        for _ in range(REPLICAS):
            herd.add("herd", url, "--timeout", "60")
        herd.release()
        # the leader is whoever writes the first history row; kill it at a random point
        until = time.monotonic() + BOUND
        victim = None
        while victim is None and time.monotonic() < until:
            found = _rows_or_none(admin, "SELECT pid FROM herd_history ORDER BY id LIMIT 1")
            victim = found[0][0] if found else None
            if victim is None:
                time.sleep(0.01)
        assert victim is not None, "no replica started migrating"
        delay = rng.uniform(0.0, 4 * STEP)
        time.sleep(delay)
        kill(victim)
        replicas = herd.finish()
        facts = inspect_database(url)
        survivors = [r for r in replicas if r.pid != victim]
        codes = Counter(r.returncode for r in survivors)
        mine = [h for h in facts.history if h["pid"] == victim]
        half = [h["revision"] for h in mine if h["status"] == "running"
                and h["revision"] not in (facts.versions or [])]
        problems = []
        if half:
            rev = half[0]
            later = REVISIONS[REVISIONS.index(rev) + 1:]
            if codes != {10: REPLICAS - 1}:
                problems.append(f"survivors exited {dict(codes)}, expected all 10")
            problems += [f"survivor {r.pid} did not name {rev}: {r.report}"
                         for r in survivors if f"revision {rev}" not in r.report.get("error", "")
                         or "herd resolve" not in r.report.get("error", "")]
            problems += [f"{later_rev} ran after the half-applied {rev}"
                         for later_rev in later if facts.starts[later_rev]]
            if any(h["pid"] != victim for h in facts.history):
                problems.append(f"a survivor wrote history rows after the half-applied {rev}")
            if any(pid != victim for pid, _, _ in facts.marks):
                problems.append(f"a survivor ran a revision after the half-applied {rev}")
            outcome = f"half-applied {rev}: reported by all survivors"
        else:
            problems += check_consistent(facts, stopped={victim})
            problems += [f"survivor {r.pid} exited {r.returncode}: {r.report}"
                         for r in survivors if r.returncode != 0]
            outcome = "killed between revisions: survivors finished"
        return {"delay": round(delay, 3), "victim": victim, "outcome": outcome,
                "codes": dict(codes), "problems": problems,
                "statuses": [(h["revision"], h["status"], h["pid"] == victim)
                             for h in facts.history],
                "leaks": leaks(secret, herd.outputs)}


def _rows_or_none(url: Any, sql: str) -> list[tuple[Any, ...]] | None:
    import sqlalchemy as sa

    try:
        return rows(url, sql)
    except sa.exc.ProgrammingError:
        return None


@pytest.mark.parametrize("trials", [pytest.param(2, id="fast"),
                                    pytest.param(20, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_mariadb_leader_killed_mid_revision_is_reported_never_skipped_or_rerun(
        trials: int, mariadb: MysqlFixture, secret: str) -> None:
    """A MariaDB leader SIGKILLed inside a revision leaves it half-applied and every survivor
    stops with IncompleteRevisionError naming it (nothing skipped, nothing run again); killed
    between revisions, the survivors finish with each data migration applied once."""
    rng = random.Random(SEED - trials)
    results = [run_mariadb_trial(mariadb, rng, secret) for _ in range(trials)]
    failed = [r for r in results if r["problems"] or r["leaks"]]
    record(f"killed-leader-mariadb-{'full' if trials > 10 else 'fast'}", {
        "backend": "MariaDB (HERD_TEST_MYSQL_URL, a user with a password)",
        "replicas": REPLICAS, "trials": trials, "failures": len(failed),
        "outcomes": dict(Counter(r["outcome"] for r in results)),
        "checks": ["half-applied: every survivor exit 10 naming the revision and "
                   "'herd resolve'", "no later revision started, the revision not re-run",
                   "otherwise: survivors exit 0, at head, data once", "password never printed"],
        "trials_detail": results,
    })
    assert not failed, failed
