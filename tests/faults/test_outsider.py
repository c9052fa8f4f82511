"""Scenario 6: a runner that does not use herd - plain ``alembic upgrade head`` - starts in
the middle of a herd.

It takes no lock, so herd's leader and it migrate at once and collide: DuplicateTable,
``duplicate key ... pg_type_typname_nsp_index``, "Online migration expected to match one
row". herd's leader recognises the signature, sees the version table move under it, keeps
the other runner's work, rolls its own transaction back and re-runs only what is still
pending - or, when the database is already at head, reports that it waited for "a migration
runner outside herd". PostgreSQL's transactional DDL and the version table's row lock keep
every revision applied once. (The plain runner may crash: that is its own race.)

Each trial picks a revision at random and releases the second party (the herd, or the
plain runner) once the first is inside it (its journal mark); it then proves the two really
overlapped: the plain runner was inside a revision while herd's replicas ran, or (the plain
runner second) it reached the database while herd's leader was inside the revision and
waited on a lock that leader's open transaction held. When the plain runner comes second,
herd's leader is held inside the revision (``HERD_FAULT_GATE``: a long migration, on cue)
until the plain runner is seen there - inside a revision, or waiting on a lock - so that on
a loaded machine the plain runner's start-up cannot outlast the leader's revision (the
leader's window was a sleep of a fraction of a second, and the trial missed). A trial where
they did not overlap is run again (bounded); one that never overlaps fails.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest
from sqlalchemy.engine import URL

from .conftest import PostgresFixture
from .trials import (
    BOUND,
    REVISIONS,
    Herd,
    failures,
    history_overlaps,
    inspect_database,
    leaks,
    record,
    rows,
    tally,
    until_landed,
)

REPLICAS = 4
STEP = 0.4


def run_trial(pg: PostgresFixture, rng: random.Random, outsider_first: bool, tpm: bool,
              secret: str) -> dict[str, Any]:
    with pg.database() as url:
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        target = rng.choice(REVISIONS)
        fd, gate = tempfile.mkstemp(prefix="herd-fault-gate-")
        os.close(fd)
        held = {} if outsider_first else {"HERD_FAULT_GATE": f"{target}:{gate}"}
        outsider = herd.add("alembic", url, label="plain alembic")
        replicas = [herd.add("herd", url, "--timeout", "120", env=held)
                    for _ in range(REPLICAS)]
        herd.ready()
        collided = ""
        try:
            if outsider_first:  # the herd starts while the outsider is inside the target
                herd.release([outsider])
                herd.wait_for_run(target, outsider.pid)
                herd.release(replicas)
                herd_started = herd.released_at
            else:  # the outsider starts while herd's leader is held inside the target
                herd.release(replicas)
                herd_started = herd.released_at
                leading = herd.wait_for_run(target)
                herd.release([outsider])
                collided = collision(herd, pg.admin_of(url), outsider.pid, leading.pid, target)
        finally:
            os.unlink(gate)
        herd.finish()
        herd_done = max(r.report.get("finished", time.time()) for r in replicas)
        outsider_done = outsider.report.get("finished", time.time())
        during = [run for run in herd.runs if run.pid == outsider.pid
                  and run.started < herd_done and (run.ended or outsider_done) > herd_started]
        fault = (f"the outsider ran {', '.join(run.revision for run in during)} while the herd "
                 "ran" if during else collided or f"aimed at {target}: the outsider ran no "
                 "revision while the herd ran, nor waited on herd's leader")
        facts = inspect_database(url)
        problems = []
        if facts.versions != ["m4"]:
            problems.append(f"version table {facts.versions}")
        if (facts.seeded, facts.second) != (1, 1):
            problems.append(f"data rows: seeded={facts.seeded} second={facts.second}")
        problems += [f"{rev}: {facts.starts[rev]} committed runs" for rev in REVISIONS
                     if facts.starts[rev] != 1 or facts.ends[rev] != 1]
        problems += facts.overlaps + history_overlaps(facts.history)
        problems += [f"herd replica {r.pid} exited {r.returncode}: {r.report} "
                     f"{r.stderr[-800:]}" for r in replicas if r.returncode != 0]
        problems += [f"history: {h['revision']} {h['status']}: {h['error']}"
                     for h in facts.history if h["status"] in ("failed", "running")]
        by_outsider = sorted({rev for pid, rev, _ in facts.marks if pid == outsider.pid})
        raced = sum("migration runner (not herd)" in r.stderr for r in replicas)
        return {
            "outsider_first": outsider_first, "tpm": tpm, "target": target,
            "landed": bool(during or collided), "fault": fault,
            "outsider": outsider.report.get("action") or outsider.report.get("type"),
            "outsider_error": (outsider.report.get("error") or "")[:160],
            "applied_by_outsider": by_outsider,
            "herd_actions": dict(Counter(r.report.get("action", r.report.get("type"))
                                         for r in replicas)),
            "herd_noticed_the_race": raced,
            "collided_rows": [h["revision"] for h in facts.history
                              if h["status"] == "rolled back"
                              and "outside herd" in (h["error"] or "")],
            "problems": problems, "leaks": leaks(secret, herd.outputs),
        }


def collision(herd: Herd, admin: URL, outsider: int, leader: int, target: str) -> str:
    """Wait (bounded) until the outsider, started while herd's leader is held inside
    ``target``, is there too: inside a revision (its journal mark), or waiting on a lock
    (a session not herd's, in ``pg_stat_activity``), while the leader's run of ``target``
    is still open. What it did, or '' when it never got there."""
    until = time.monotonic() + BOUND
    while time.monotonic() < until:
        runs = herd.journal.runs()
        if not any(r.pid == leader and r.revision == target and r.ended is None
                   for r in runs):
            return ""
        inside = [r.revision for r in runs if r.pid == outsider]
        if inside:
            return f"the outsider entered {inside[0]} while herd's leader was inside {target}"
        waiting = rows(admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND wait_event_type = 'Lock' AND "
                              "coalesce(application_name, '') NOT LIKE 'herd%' AND "
                              "pid <> pg_backend_pid()")[0][0]
        if waiting:
            return (f"the outsider waited on a lock held by herd's leader inside {target} "
                    "(pg_stat_activity)")
        if herd.replicas[0].proc.poll() is not None:  # the outsider exited
            return ""
        time.sleep(0.02)
    return ""


@pytest.mark.parametrize("trials", [pytest.param(2, id="fast"),
                                    pytest.param(16, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_a_plain_alembic_runner_mid_herd_is_survived_and_nothing_runs_twice(
        trials: int, fault_pg: PostgresFixture, secret: str) -> None:
    """With a plain `alembic upgrade head` started before or during a herd, every herd
    replica ends ready (the leader recognises the collision, keeps the other runner's work
    and re-runs only what is pending), the schema is at head and each revision, data
    migrations included, is committed once."""
    rng = random.Random(6006 + trials)
    plan = [(n % 2 == 0, n % 4 in (1, 2)) for n in range(trials)]
    results = [until_landed(partial(run_trial, fault_pg, rng, first, tpm, secret))
               for first, tpm in plan]
    record(f"outsider-{'full' if trials > 2 else 'fast'}", {
        "backend": "postgresql (the suite's own server)", "replicas": REPLICAS,
        **tally(results),
        "trials_where_herd_noticed_a_collision": sum(bool(r["herd_noticed_the_race"])
                                                     for r in results),
        "outsider_outcomes": dict(Counter(r["outsider"] for r in results)),
        "checks": ["fault landed: the outsider was inside a revision (journal) while the herd's "
                   "replicas ran, started inside a revision of the outsider's or of herd's "
                   "leader; or, started second, it waited on a lock of herd's leader's open "
                   "revision (pg_stat_activity), the leader held there until it did",
                   "every herd replica exit 0", "version table at m4",
                   "each revision committed once (marks), data rows once",
                   "no overlapping committed runs", "no 'failed' or 'running' history row",
                   "password never printed"],
        "trials_detail": results,
    })
    assert not failures(results), failures(results)
