"""Scenario 4: PgBouncer in transaction pooling mode between the replicas and PostgreSQL.

Each statement may run on another server session, so a session advisory lock taken
through it would stay on a pooled session - shared with the next client that gets it and
never released (rails#32622, prisma#12999). herd refuses it with a ConfigurationError that
names the two ways that work, and both are shown to work: ``lock='table'`` (a lease row:
single statements, fine through a pooler) and ``lock_url=`` (herd's own connections go
straight to the server while env.py migrates through PgBouncer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from .conftest import ROLE, PostgresFixture
from .infra import PgBouncer
from .trials import Herd, check_consistent, history_overlaps, inspect_database, leaks, record, rows

REPLICAS = 6
STEP = 0.1


@pytest.fixture(scope="module")
def pgbouncer(real_pg: PostgresFixture, secret: str) -> Iterator[PgBouncer]:
    if shutil.which("pgbouncer") is None and not os.path.exists("/usr/sbin/pgbouncer"):
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    bouncer = PgBouncer(real_pg.host, real_pg.port, {ROLE: secret})
    yield bouncer
    bouncer.close()


def herd_through(bouncer: PgBouncer, pg: PostgresFixture, url: URL, secret: str,
                 *options: str) -> tuple[list[Any], Any, list[str]]:
    pooled = bouncer.url(ROLE, secret, url.database or "")
    herd = Herd(env={"HERD_FAULT_STEP": str(STEP)})
    for _ in range(REPLICAS):
        herd.add("herd", pooled, "--timeout", "60", *options)
    herd.release()
    replicas = herd.finish()
    return replicas, inspect_database(url), herd.outputs


def advisory_locks(pg: PostgresFixture, url: URL) -> int:
    found = rows(pg.admin_of(url), "SELECT count(*) FROM pg_locks l JOIN pg_database d ON "
                                   "d.oid = l.database WHERE l.locktype = 'advisory' AND "
                                   "d.datname = current_database()")
    return int(found[0][0])


def test_through_pgbouncer_the_herd_works_with_a_lease_and_with_a_direct_lock_url(
        pgbouncer: PgBouncer, real_pg: PostgresFixture, secret: str) -> None:
    """Through PgBouncer (transaction pooling) a herd with lock='table', and a herd with
    lock_url= pointing straight at the server, each end all ready, at head, each revision
    applied once, no overlapping runs, and no advisory lock left on the server."""
    outcome: dict[str, Any] = {}
    problems: list[str] = []
    for variant in ("table", "lock-url"):
        with real_pg.database() as url:
            options = (["--lock", "table"] if variant == "table"
                       else ["--lock-url", url.render_as_string(hide_password=False)])
            replicas, facts, outputs = herd_through(pgbouncer, real_pg, url, secret, *options)
            found = check_consistent(facts) + history_overlaps(facts.history)
            found += [f"{variant}: replica exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                      for r in replicas if r.returncode != 0]
            found += [f"{variant}: password printed: {line}" for line in leaks(secret, outputs)]
            if advisory_locks(real_pg, url):
                found.append(f"{variant}: an advisory lock is left on the server")
            problems += found
            outcome[variant] = {
                "actions": dict(Counter(r.report.get("action", r.report.get("type"))
                                        for r in replicas)),
                "seconds_max": round(max(r.report.get("seconds", 0) for r in replicas), 2),
                "problems": found}
    record("pgbouncer-works", {"backend": "PgBouncer 1.x, pool_mode=transaction, in front of "
                               "HERD_TEST_POSTGRES_URL (else the suite's own)",
                               "replicas": REPLICAS, "variants": outcome,
                               "failures": sum(bool(v["problems"]) for v in outcome.values())})
    assert not problems, problems


def test_an_advisory_lock_through_pgbouncer_is_refused_with_the_ways_that_work(
        pgbouncer: PgBouncer, real_pg: PostgresFixture, secret: str) -> None:
    """An advisory lock through PgBouncer in transaction mode (url, or lock_url, pointing at
    it) is refused by every replica with a ConfigurationError (exit 3) naming --lock table
    and --lock-url; nothing is migrated and no advisory lock is left on any server
    session."""
    outcome: dict[str, Any] = {}
    problems: list[str] = []
    for variant in ("url", "lock-url"):
        with real_pg.database() as url:
            pooled = pgbouncer.url(ROLE, secret, url.database or "")
            options = ([] if variant == "url"
                       else ["--lock-url", pooled.render_as_string(hide_password=False)])
            replicas, facts, outputs = herd_through(pgbouncer, real_pg, url, secret, *options)
            codes = Counter(r.returncode for r in replicas)
            messages = {r.report.get("error", "") for r in replicas}
            found = []
            if codes != {3: REPLICAS}:
                found.append(f"{variant}: exit codes {dict(codes)}, expected all 3")
            found += [f"{variant}: unclear message: {m}" for m in messages
                      if not ("pooler" in m and "--lock table" in m and "--lock-url" in m)]
            if facts.versions is not None or facts.history:
                found.append(f"{variant}: something was migrated: {facts.summary()}")
            if advisory_locks(real_pg, url):
                found.append(f"{variant}: an advisory lock leaked on a pooled session")
            found += [f"{variant}: password printed: {line}" for line in leaks(secret, outputs)]
            problems += found
            outcome[variant] = {"exit_codes": dict(codes), "message": sorted(messages)[0],
                                "problems": found}
    record("pgbouncer-advisory-refused", {"variants": outcome, "replicas": REPLICAS,
                                          "failures": sum(bool(v["problems"])
                                                          for v in outcome.values())})
    assert not problems, problems


def test_through_pgbouncer_the_fast_lane_takes_no_gate(
        pgbouncer: PgBouncer, real_pg: PostgresFixture, secret: str, tmp_path: Path) -> None:
    """``herd migrate`` processes through PgBouncer find the database behind: the fast lane
    must not take its gate (a session lock on a pooled session would stay there, shared
    and never released); it says so and the normal path migrates (``--lock table``). All
    exit 0, the database is at head, no advisory lock is left on any server session."""
    script = Path(sys.executable).with_name("herd")
    project = Path(__file__).resolve().parents[1] / "projects" / "herdset" / "alembic.ini"
    with real_pg.database() as url:
        pooled = pgbouncer.url(ROLE, secret, url.database or "").render_as_string(
            hide_password=False)
        env = {**os.environ, "HERD_FAST_LANE_DEBUG": "1"}
        procs = [subprocess.Popen([str(script), "migrate", "-c", str(project), "--url", pooled,
                                   "--lock", "table"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        results = [p.communicate(timeout=300) for p in procs]
        lanes = [next((line for line in err.splitlines() if "fast lane:" in line
                       and "no stamp" not in line), "") for _, err in results]
        assert [p.returncode for p in procs] == [0, 0, 0], results
        gateless = ["the gate needs a session of its own" in line for line in lanes]
        assert any(gateless), lanes  # the first found the database behind, at least
        assert all(g or line.endswith("answered") for g, line in zip(gateless, lanes,
                                                                      strict=True)), lanes
        assert rows(real_pg.admin_of(url), "SELECT version_num FROM alembic_version") == [
            ("d4",)]
        assert not advisory_locks(real_pg, url)
        assert not leaks(secret, [out + err for out, err in results])
