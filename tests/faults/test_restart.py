"""Scenario 2: the database server restarts (``pg_ctl restart -m fast``) in the middle of
a herd, at a random point of the migration.

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
from typing import Any

import pytest

from .conftest import PostgresFixture
from .infra import fault_server
from .trials import (
    REVISIONS,
    Herd,
    check_consistent,
    history_overlaps,
    holder_pid,
    inspect_database,
    leaks,
    percentile,
    record,
)

REPLICAS = 5
STEP = 0.3
LEASE_TTL = 6.0


@pytest.fixture(scope="module")
def restart_pg() -> Iterator[PostgresFixture]:
    """A server of this module's own: restarting it disturbs no other test."""
    with fault_server(settings={"max_connections": "100"}) as server:
        yield PostgresFixture(server.admin, "127.0.0.1", server.port, server)


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
        herd.release()
        until = time.monotonic() + 30
        while lock == "advisory" and holder_pid(admin) is None and time.monotonic() < until:
            time.sleep(0.01)
        delay = rng.uniform(0.0, 4 * STEP)
        time.sleep(delay)
        before = [r.proc.poll() for r in herd.replicas]
        restarted_at = time.time()
        began = time.monotonic()
        pg.server.restart("fast")
        restart_seconds = time.monotonic() - began
        replicas = herd.finish()
        facts = inspect_database(url)
        problems = check_consistent(facts, stopped={r.pid for r in replicas})
        problems += history_overlaps(facts.history)
        problems += [f"{r.label} {r.pid} exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                     for r in replicas if r.returncode != 0]
        reconnected = sum("connecting again" in r.stderr for r in replicas)
        finished = [r.report.get("finished", restarted_at) for r in replicas]
        return {
            "lock": lock, "tpm": tpm, "delay": round(delay, 3),
            "already_done_before_restart": sum(code is not None for code in before),
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
    """After a fast server restart at a random point of the migration, every replica
    (migrating or waiting) reconnects within its deadline and ends ready, the schema at
    head, each data migration applied once, no overlapping runs."""
    rng = random.Random(4242 + trials)
    plan = [("advisory" if n % 4 != 3 else "table", n % 2 == 1) for n in range(trials)]
    results = [run_trial(restart_pg, rng, lock, tpm, secret) for lock, tpm in plan]
    failed = [r for r in results if r["problems"] or r["leaks"]]
    ready = [r["ready_after_restart_seconds"] for r in results]
    record(f"restart-{'full' if trials > 10 else 'fast'}", {
        "backend": "postgresql (a server of the test's own, restarted with pg_ctl -m fast)",
        "replicas": f"{REPLICAS - 1} herd upgrade + 1 wait_until_current",
        "revisions": len(REVISIONS), "step_seconds": STEP, "lease_ttl": LEASE_TTL,
        "trials": trials, "failures": len(failed),
        "by_lock": dict(Counter(r["lock"] for r in results)),
        "interrupted_revisions": sum(len(r["interrupted"]) for r in results),
        "replicas_that_reconnected": sum(r["replicas_that_reconnected"] for r in results),
        "restart_seconds_median": percentile([r["restart_seconds"] for r in results], 0.5),
        "ready_after_restart_seconds": {"median": percentile(ready, 0.5),
                                        "max": max(ready)},
        "checks": ["every replica exit 0 (herd and wait)", "version table at m4",
                   "data migrations' rows once", "each revision's committed marks once",
                   "no overlapping committed runs or attempts", "password never printed"],
        "trials_detail": results,
    })
    assert not failed, failed
