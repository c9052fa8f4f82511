"""Scenario 5: more replicas than the server has connection slots.

200 replicas (forked from one interpreter: real processes, each with its own connections)
against a PostgreSQL with ``max_connections = 50`` (3 reserved for superusers, so 47 for
the replicas' role). The trial first proves the starvation happened: some replica was
refused a connection for want of a slot ("sorry, too many clients already", SQLSTATE
53300). That is transient, so they retry with jittered backoff until their deadline.
Every replica ends ready, and a replica that is waiting holds at most one connection
(sampled from pg_stat_activity throughout; the lock holder, which also runs the
migration, is excluded).

On a loaded machine 200 forked replicas do not all reach the server at once (a run saw at
most 35 sessions for 47 slots: nobody was refused, the fault never landed), so the trial
first takes all but :data:`FREE` of the role's slots itself with idle sessions (a server
whose other clients hold most slots), then releases the herd: far more replicas than free
slots, whatever the load.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .conftest import PostgresFixture
from .infra import fault_server
from .trials import (
    BOUND,
    FAULTSET,
    HERE,
    check_consistent,
    history_overlaps,
    inspect_database,
    leaks,
    record,
    render,
    rows,
)

FORKER = HERE / "fault_forker.py"
RESERVED = 3
HOG = "herd-fault-hog"  # application_name of the sessions that take slots up front
SLOTS_FULL = ("too many clients", "remaining connection slots are reserved")  # SQLSTATE 53300


class Sampler(threading.Thread):
    """Samples pg_stat_activity every 0.1 s: herd's sessions per replica pid."""

    def __init__(self, admin: Any) -> None:
        super().__init__(daemon=True)
        self.admin = admin
        self.stop = threading.Event()
        self.samples = 0
        self.failed = 0
        self.max_total = 0
        self.max_per_waiter = 0
        self.worst: list[Any] = []

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                found = rows(self.admin, "SELECT application_name, count(*) FROM "
                                         "pg_stat_activity WHERE datname = current_database() "
                                         "AND backend_type = 'client backend' GROUP BY 1")
            except Exception:  # saturated: even the reserved slots are briefly taken
                self.failed += 1
                continue
            self.samples += 1
            per_pid: Counter[int] = Counter()
            holders = set()
            total = 0
            for name, count in found:
                total += count
                parts = (name or "").split(" ")
                if parts[0] != "herd":
                    continue
                if len(parts) == 4 and parts[1].isdigit():  # 'herd <pid> <since> <host>'
                    holders.add(int(parts[1]))
                    per_pid[int(parts[1])] += count
                elif len(parts) == 3 and parts[2].isdigit():  # 'herd <host> <pid>'
                    per_pid[int(parts[2])] += count
            self.max_total = max(self.max_total, total)
            waiting = {pid: n for pid, n in per_pid.items() if pid not in holders}
            if waiting and max(waiting.values()) > self.max_per_waiter:
                self.max_per_waiter = max(waiting.values())
                self.worst = sorted(waiting.items(), key=lambda kv: -kv[1])[:3]


@pytest.fixture
def small_server(request: pytest.FixtureRequest) -> Iterator[PostgresFixture]:
    slots = request.param
    with fault_server(settings={"max_connections": str(slots),
                                "superuser_reserved_connections": str(RESERVED)}) as server:
        yield PostgresFixture(server.admin, "127.0.0.1", server.port, server)


@contextlib.contextmanager
def slots_taken(url: Any, count: int) -> Iterator[None]:
    """``count`` idle sessions of the replicas' role on ``url`` for the block's length."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool,
                           connect_args={"application_name": HOG})
    held = []
    try:
        for _ in range(count):
            held.append(eng.connect())
        yield
    finally:
        for conn in held:
            conn.close()
        eng.dispose()


@pytest.mark.parametrize(("replicas", "small_server", "step", "free"), [
    pytest.param(30, 15, 0.5, 6, id="fast-30-replicas-15-slots"),
    pytest.param(200, 50, 1.0, 12, id="full-200-replicas-50-slots", marks=pytest.mark.slow),
], indirect=["small_server"])
@pytest.mark.timeout(1200)
def test_more_replicas_than_connection_slots_all_become_ready(
        replicas: int, small_server: PostgresFixture, step: float, free: int,
        secret: str) -> None:
    """With far more replicas than max_connections allows, 'too many clients' is retried as
    transient and every replica ends ready, at head, each revision applied once, while a
    waiting replica never holds more than one connection."""
    slots = int(rows(small_server.admin, "SHOW max_connections")[0][0])
    hogs = slots - RESERVED - free
    with small_server.database() as url, slots_taken(url, hogs):
        logdir = Path(tempfile.mkdtemp(prefix="herd-starve-"))
        proc = subprocess.Popen(
            [sys.executable, str(FORKER), str(replicas), FAULTSET, render(url), str(logdir),
             "--timeout", "300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "HERD_FAULT_STEP": str(step)})
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        sampler = Sampler(small_server.admin_of(url))
        sampler.start()
        began = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        try:
            proc.wait(BOUND * 4)
        finally:
            sampler.stop.set()
            sampler.join(10)
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - began
        reports = [json.loads(Path(f).read_text()) for f in glob.glob(f"{logdir}/*.json")]
        logs = [Path(f).read_text() for f in glob.glob(f"{logdir}/*.log")]
        facts = inspect_database(url)
        problems = check_consistent(facts) + history_overlaps(facts.history)
        if len(reports) != replicas:
            problems.append(f"{len(reports)} of {replicas} replicas reported")
        problems += [f"replica {r['pid']} exited {r['code']}: {r.get('error')}"
                     for r in reports if r["code"] != 0][:5]
        if sampler.max_per_waiter > 1:
            problems.append(f"a waiting replica held {sampler.max_per_waiter} connections: "
                            f"{sampler.worst}")
        leaked = leaks(secret, logs)
        refused = sum(any(words in text for words in SLOTS_FULL) for text in logs)
        landed = refused > 0
        record(f"starvation-{'full' if replicas > 50 else 'fast'}", {
            "backend": "postgresql (a server of the test's own)",
            "replicas": replicas, "max_connections": slots,
            "superuser_reserved_connections": RESERVED, "step_seconds": step,
            "slots_taken_up_front": hogs, "slots_left_for_the_replicas": free,
            "trials": 1, "landed": int(landed), "not_landed": int(not landed), "reruns": 0,
            "failures": int(bool(problems) or not landed), "problems": problems,
            "all_ready_seconds": round(took, 1),
            "actions": dict(Counter(r.get("action", r.get("type")) for r in reports)),
            "replicas_refused_at_first_then_retried": refused,
            "max_client_sessions_seen": sampler.max_total,
            "max_connections_per_waiting_replica": sampler.max_per_waiter,
            "samples": sampler.samples, "samples_refused_while_saturated": sampler.failed,
            "checks": [f"{hogs} of the role's slots taken up front by idle sessions, "
                       f"{free} left for {replicas} replicas",
                       "fault landed: the server refused some replica a connection (53300: no "
                       "slot left)", "every replica exit 0", "at head, each revision applied once",
                       "a waiting replica never held more than one connection",
                       "password never printed"]})
        for path in logdir.iterdir():
            path.unlink()
        logdir.rmdir()
        assert landed, "no replica was refused a connection: the server was never starved"
        assert not problems, problems
        assert not leaked, leaked[:3]
        assert sampler.samples > 0
