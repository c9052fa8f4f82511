"""Scenario 2: the database server restarts (``pg_ctl restart -m fast``) in the middle of
a herd, inside a revision chosen at random.

The trial restarts the server once the leader's journal mark says that revision started,
and proves the restart landed: ``pg_postmaster_start_time()`` changed, and the leader's run
of the revision, started before the restart, never ended (the server cut its session). A
trial where it did not land is run again (bounded); one that never lands fails.

Every session ends at once: the leader's migration connection, its lock session, the
waiters' connections. Each replica connects again within its deadline and starts over
(check -> elect): the database rolled the leader's transaction back, the next leader
accounts for the revision left 'running', and the herd finishes. Nothing is applied twice.
With ``lock='table'`` the lease row outlives the restart; it expires after its ttl.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy.engine import URL

from .conftest import PostgresFixture
from .infra import fault_server
from .trials import (
    REVISIONS,
    Herd,
    check_consistent,
    failures,
    history_overlaps,
    inspect_database,
    leaks,
    percentile,
    record,
    rows,
    tally,
    until_landed,
)

REPLICAS = 5
STEP = 0.3
LEASE_TTL = 6.0


@pytest.fixture(scope="module")
def restart_pg() -> Iterator[PostgresFixture]:
    """A server of this module's own: restarting it disturbs no other test."""
    with fault_server(settings={"max_connections": "100"}) as server:
        yield PostgresFixture(server.admin, "127.0.0.1", server.port, server)


def postmaster_started(admin: URL) -> object:
    """When the server's postmaster started: a restart changes it."""
    return rows(admin, "SELECT pg_postmaster_start_time()")[0][0]


def run_trial(pg: PostgresFixture, rng: random.Random, lock: str, tpm: bool,
              secret: str) -> dict[str, Any]:
    assert pg.server is not None
    with pg.database() as url:
        admin = pg.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        options = ["--timeout", "90", "--lock", lock, "--lease-ttl", str(LEASE_TTL)]
        for _ in range(REPLICAS - 1):
            herd.add("herd", url, *options)
        herd.add("wait", url, "--timeout", "90", label="worker")  # never migrates
        server_before = postmaster_started(admin)
        herd.release()
        target = rng.choice(REVISIONS)
        leader = herd.wait_for_run(target).pid
        time.sleep(rng.uniform(0.0, STEP / 2))
        restarted_at = time.time()
        began = time.monotonic()
        pg.server.restart("fast")
        restart_seconds = time.monotonic() - began
        server_after = postmaster_started(admin)
        replicas = herd.finish()
        cut = next((run for run in herd.runs if run.pid == leader and run.cut_by(restarted_at)),
                   None)
        landed = cut is not None and server_after != server_before
        facts = inspect_database(url)
        problems = check_consistent(facts, stopped={r.pid for r in replicas})
        problems += history_overlaps(facts.history)
        problems += [f"{r.label} {r.pid} exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                     for r in replicas if r.returncode != 0]
        reconnected = sum("connecting again" in r.stderr for r in replicas)
        finished = [r.report.get("finished", restarted_at) for r in replicas]
        return {
            "lock": lock, "tpm": tpm, "target": target, "landed": landed,
            "fault": f"restarted inside {cut.revision}" if landed and cut else
            f"aimed at {target}: run cut {cut is not None}, server restarted "
            f"{server_after != server_before}",
            "restart_seconds": round(restart_seconds, 3),
            "ready_after_restart_seconds": round(max(finished) - restarted_at, 3),
            "replicas_that_reconnected": reconnected,
            "interrupted": [h["revision"] for h in facts.history
                            if h["status"] == "interrupted"],
            "actions": dict(Counter(r.report.get("action", r.report.get("type"))
                                    for r in replicas)),
            "problems": problems, "leaks": leaks(secret, herd.outputs),
        }


@pytest.mark.parametrize("trials", [pytest.param(2, id="fast"),
                                    pytest.param(20, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_a_server_restart_mid_herd_leaves_every_replica_ready_and_nothing_twice(
        trials: int, restart_pg: PostgresFixture, secret: str) -> None:
    """After a fast server restart that cuts the leader inside a revision, every replica
    (migrating or waiting) reconnects within its deadline and ends ready, the schema at
    head, each data migration applied once, no overlapping runs."""
    rng = random.Random(4242 + trials)
    plan = [("advisory" if n % 4 != 3 else "table", n % 2 == 1) for n in range(trials)]
    results = [until_landed(partial(run_trial, restart_pg, rng, lock, tpm, secret))
               for lock, tpm in plan]
    ready = [r["ready_after_restart_seconds"] for r in results]
    record(f"restart-{'full' if trials > 10 else 'fast'}", {
        "backend": "postgresql (a server of the test's own, restarted with pg_ctl -m fast)",
        "replicas": f"{REPLICAS - 1} herd upgrade + 1 wait_until_current",
        "revisions": len(REVISIONS), "step_seconds": STEP, "lease_ttl": LEASE_TTL,
        **tally(results),
        "where": dict(Counter(r["fault"] for r in results)),
        "by_lock": dict(Counter(r["lock"] for r in results)),
        "interrupted_revisions": sum(len(r["interrupted"]) for r in results),
        "replicas_that_reconnected": sum(r["replicas_that_reconnected"] for r in results),
        "restart_seconds_median": percentile([r["restart_seconds"] for r in results], 0.5),
        "ready_after_restart_seconds": {"median": percentile(ready, 0.5),
                                        "max": max(ready)},
        "checks": ["fault landed: the server's start time changed, and the restart cut the "
                   "leader's run of a revision (journal: started before it, never ended)",
                   "every replica exit 0 (herd and wait)", "version table at m4",
                   "data migrations' rows once", "each revision's committed marks once",
                   "no overlapping committed runs or attempts", "password never printed"],
        "trials_detail": results,
    })
    assert not failures(results), failures(results)
