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
overlapped: the plain runner was inside a revision while herd's replicas ran. A trial where
they did not (the first party finished before the second looked) is run again (bounded);
one that never overlaps fails.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest

from .conftest import PostgresFixture
from .trials import (
    REVISIONS,
    Herd,
    failures,
    history_overlaps,
    inspect_database,
    leaks,
    record,
    tally,
    until_landed,
)

REPLICAS = 4
STEP = 0.4


def run_trial(pg: PostgresFixture, rng: random.Random, outsider_first: bool, tpm: bool,
              secret: str) -> dict[str, Any]:
    with pg.database() as url:
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        outsider = herd.add("alembic", url, label="plain alembic")
        replicas = [herd.add("herd", url, "--timeout", "120") for _ in range(REPLICAS)]
        herd.ready()
        target = rng.choice(REVISIONS)
        if outsider_first:  # the herd starts while the outsider is inside the target
            herd.release([outsider])
            herd.wait_for_run(target, outsider.pid)
            herd.release(replicas)
            herd_started = herd.released_at
        else:  # the outsider starts while herd's leader is inside the target
            herd.release(replicas)
            herd_started = herd.released_at
            herd.wait_for_run(target)
            herd.release([outsider])
        herd.finish()
        herd_done = max(r.report.get("finished", time.time()) for r in replicas)
        outsider_done = outsider.report.get("finished", time.time())
        during = [run for run in herd.runs if run.pid == outsider.pid
                  and run.started < herd_done and (run.ended or outsider_done) > herd_started]
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
            "landed": bool(during),
            "fault": f"the outsider ran {', '.join(run.revision for run in during)} while the "
            "herd ran" if during else f"aimed at {target}: the outsider ran no revision while "
            "the herd ran",
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
                   "leader", "every herd replica exit 0", "version table at m4",
                   "each revision committed once (marks), data rows once",
                   "no overlapping committed runs", "no 'failed' or 'running' history row",
                   "password never printed"],
        "trials_detail": results,
    })
    assert not failures(results), failures(results)
