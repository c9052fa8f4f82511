"""Scenario 1: the leader is SIGKILLed inside a revision of a four-revision migration.

Each trial picks a revision at random, waits until its journal mark says it started, and
kills the process running it at a random point of its first half; the trial then proves the
kill landed (the victim died of the SIGKILL with that run started and never ended) or runs
again (bounded; a trial whose kill never landed fails).

PostgreSQL (transactional DDL, one transaction or transaction_per_migration): every
survivor ends ready, the schema is at head, each data migration's row is there once, each
revision's committed marks are there once, no two processes' committed runs overlap, and
the history tells what happened (the killed attempt 'interrupted' / 'rolled back').

MariaDB (DDL is not transactional): a kill inside a revision leaves it half-applied; every
survivor stops with IncompleteRevisionError naming it, nothing after it runs and it is not
run again.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest

from .conftest import MysqlFixture, PostgresFixture
from .trials import (
    REVISIONS,
    Herd,
    Replica,
    Run,
    check_consistent,
    failures,
    history_overlaps,
    inspect_database,
    kill,
    leaks,
    percentile,
    record,
    tally,
    until_landed,
)

REPLICAS = 5
STEP = 0.25  # seconds each revision sleeps: the migration takes about 4 * STEP
SEED = 20261129


def killed_inside(herd: Herd, victim: Replica, killed_at: float) -> Run | None:
    """The victim's run that the kill cut (started before it, never ended), if the SIGKILL
    is what ended the victim."""
    if victim.returncode != -signal.SIGKILL:
        return None
    return next((run for run in herd.runs if run.pid == victim.pid and run.cut_by(killed_at)),
                None)


def kill_mid_revision(herd: Herd, rng: random.Random) -> tuple[Replica, str, float]:
    """Wait until a revision chosen at random starts, then SIGKILL the process running it
    at a random point of its first half (it sleeps STEP seconds in the middle)."""
    target = rng.choice(REVISIONS)
    run = herd.wait_for_run(target)
    time.sleep(rng.uniform(0.0, STEP / 2))
    killed_at = time.time()
    kill(run.pid)
    victim = next(r for r in herd.replicas if r.pid == run.pid)
    return victim, target, killed_at


def run_pg_trial(fault_pg: PostgresFixture, rng: random.Random, tpm: bool, secret: str
                 ) -> dict[str, Any]:
    with fault_pg.database() as url:
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        for _ in range(REPLICAS):
            herd.add("herd", url, "--timeout", "120")
        herd.release()
        victim, target, killed_at = kill_mid_revision(herd, rng)
        replicas = herd.finish()
        cut = killed_inside(herd, victim, killed_at)
        facts = inspect_database(url)
        problems = check_consistent(facts, stopped={victim.pid})
        problems += history_overlaps(facts.history)
        survivors = [r for r in replicas if r is not victim]
        problems += [f"survivor {r.pid} exited {r.returncode}: {r.report} {r.stderr[-800:]}"
                     for r in survivors if r.returncode != 0]
        in_table = set(facts.versions or [])
        problems += [f"the killed leader's {h['revision']} is still 'running'"
                     for h in facts.history if h["pid"] == victim.pid
                     and h["status"] == "running" and h["revision"] not in in_table]
        finished = [r.report.get("finished", killed_at) for r in survivors]
        return {
            "tpm": tpm, "target": target, "victim": victim.pid, "landed": cut is not None,
            "fault": f"killed inside {cut.revision}" if cut else
            f"aimed at {target}, no run cut (exit {victim.returncode})",
            "actions": dict(Counter(r.report.get("action", r.report.get("type"))
                                    for r in survivors)),
            "recovery_seconds": round(max(finished) - killed_at, 3),
            "statuses": [(h["revision"], h["status"], h["pid"] == victim.pid)
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
    results = [until_landed(partial(run_pg_trial, fault_pg, rng, n % 2 == 1, secret))
               for n in range(trials)]
    recovery = [r["recovery_seconds"] for r in results if r["landed"]]
    record(f"killed-leader-postgresql-{'full' if trials > 10 else 'fast'}", {
        "backend": "postgresql (the suite's own server, SCRAM password)",
        "replicas": REPLICAS, "revisions": len(REVISIONS), "step_seconds": STEP,
        **tally(results),
        "where": dict(Counter(r["fault"] for r in results)),
        "recovery_seconds": {"median": percentile(recovery, 0.5),
                             "p95": percentile(recovery, 0.95), "max": max(recovery or [0])},
        "checks": ["fault landed: the SIGKILL cut a revision's run (journal: a start, no end)",
                   "every survivor exit 0", "version table at m4",
                   "data migrations' rows once each", "each revision's committed marks once",
                   "no overlapping committed runs (marks) or attempts (history)",
                   "killed attempt reconciled: no 'running' row for an unapplied revision",
                   "password never printed"],
        "trials_detail": results,
    })
    assert not failures(results), failures(results)


def run_mariadb_trial(mariadb: MysqlFixture, rng: random.Random, secret: str
                      ) -> dict[str, Any]:
    with mariadb.database() as url:
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP)})
        for _ in range(REPLICAS):
            herd.add("herd", url, "--timeout", "60")
        herd.release()
        victim, target, killed_at = kill_mid_revision(herd, rng)
        replicas = herd.finish()
        cut = killed_inside(herd, victim, killed_at)
        facts = inspect_database(url)
        survivors = [r for r in replicas if r is not victim]
        codes = Counter(r.returncode for r in survivors)
        half = [h["revision"] for h in facts.history if h["pid"] == victim.pid
                and h["status"] == "running" and h["revision"] not in (facts.versions or [])]
        problems = []
        if cut is not None and half != [cut.revision]:
            problems.append(f"killed inside {cut.revision}, but the history leaves {half} "
                            "half-applied")
        if half:
            rev = half[0]
            if codes != {10: REPLICAS - 1}:
                problems.append(f"survivors exited {dict(codes)}, expected all 10")
            problems += [f"survivor {r.pid} did not name {rev}: {r.report}"
                         for r in survivors if f"revision {rev}" not in r.report.get("error", "")
                         or "herd resolve" not in r.report.get("error", "")]
            if any(h["pid"] != victim.pid for h in facts.history):
                problems.append(f"a survivor wrote history rows after the half-applied {rev}")
            if any(run.pid != victim.pid for run in herd.runs):
                problems.append(f"a survivor ran a revision after the half-applied {rev}")
        else:  # a kill that missed (between revisions): nothing to repair
            problems += check_consistent(facts, stopped={victim.pid})
            problems += [f"survivor {r.pid} exited {r.returncode}: {r.report}"
                         for r in survivors if r.returncode != 0]
        return {"target": target, "victim": victim.pid, "landed": cut is not None,
                "fault": f"killed inside {cut.revision}" if cut else
                f"aimed at {target}, no run cut (exit {victim.returncode})",
                "codes": dict(codes), "problems": problems,
                "statuses": [(h["revision"], h["status"], h["pid"] == victim.pid)
                             for h in facts.history],
                "leaks": leaks(secret, herd.outputs)}


@pytest.mark.parametrize("trials", [pytest.param(2, id="fast"),
                                    pytest.param(20, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_mariadb_leader_killed_mid_revision_is_reported_never_skipped_or_rerun(
        trials: int, mariadb: MysqlFixture, secret: str) -> None:
    """A MariaDB leader SIGKILLed inside a revision leaves it half-applied and every survivor
    stops with IncompleteRevisionError naming it: nothing skipped, nothing run again."""
    rng = random.Random(SEED - trials)
    results = [until_landed(partial(run_mariadb_trial, mariadb, rng, secret))
               for _ in range(trials)]
    record(f"killed-leader-mariadb-{'full' if trials > 10 else 'fast'}", {
        "backend": "MariaDB (HERD_TEST_MYSQL_URL, a user with a password)",
        "replicas": REPLICAS, **tally(results),
        "where": dict(Counter(r["fault"] for r in results)),
        "checks": ["fault landed: the SIGKILL cut a revision's run (journal: a start, no end)",
                   "the history leaves exactly that revision half-applied",
                   "every survivor exit 10 naming the revision and 'herd resolve'",
                   "no survivor ran a revision or wrote history: nothing skipped or re-run",
                   "password never printed"],
        "trials_detail": results,
    })
    assert not failures(results), failures(results)
