"""1,000 waiting replicas on one PostgreSQL, directly and through PgBouncer (issue 17, point 6).

One leader, a ``herd migrate`` process on a direct connection, runs a revision that holds
until this harness says so. Meanwhile ``--waiters`` replicas wait for it: ``--procs``
worker processes, each running its share as threads, every thread calling herd's real
waiting path, :func:`alembic_herd.wait_until_current`. Once every waiter has looked at
the database and is waiting, the harness watches ``--window`` seconds of steady waiting,
then lets the revision finish. Two modes, each on a server of its own (embedded
PostgreSQL, ``max_connections`` ``--max-connections``):

* ``direct``: the waiters connect to the server;
* ``pgbouncer``: the waiters connect through PgBouncer in transaction pooling mode
  (``tests/faults/infra.PgBouncer``, ``default_pool_size`` 20); the leader stays direct.

Measured: connections to the database (``pg_stat_activity`` sampled every 100 ms: peak,
and median over the steady window), statements the waiters ran during the window (counted
in each process, one monotonic clock for all) and the server's committed transactions
(``pg_stat_database.xact_commit``) over the same window, per second; from the leader's
process exit to each waiter's return (p50, p99, max); failures (a waiter that raised, the
leader's exit code) and the database's heads afterwards.

::

    python -m bench.herd1000 [--waiters 1000] [--procs 8] [--modes direct,pgbouncer]
        [--out bench/results/herd1000.json]

``make herd1000`` runs it with the defaults (several minutes on two cores).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from .projects import ENV_PY, set_url
from .stats import median, summary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "herd1000.json"
POOL_SIZE = 20  # tests/faults/infra.PgBouncer's default_pool_size
SAMPLE_EVERY = 0.1
BOUND = 900.0  # seconds: a bound on waiting for what must happen, never a measurement

HELD = '''"""a revision that holds until the harness releases it

Revision ID: h1
Revises:
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "h1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    until = time.monotonic() + {bound}
    while not os.path.exists({release!r}) and time.monotonic() < until:
        time.sleep(0.02)
    op.create_table("held", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("held")
'''

QUICK = '''"""second revision

Revision ID: h2
Revises: h1
"""
import sqlalchemy as sa
from alembic import op

revision = "h2"
down_revision = "h1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("after", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("after")
'''


def write_project(folder: Path, release: Path) -> Path:
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(ENV_PY, folder / "migrations" / "env.py")
    (versions / "h1_held.py").write_text(HELD.format(bound=BOUND, release=str(release)))
    (versions / "h2_quick.py").write_text(QUICK)
    ini = folder / "alembic.ini"
    set_url(ini, None)
    return ini


# -- a worker process: many waiters as threads -------------------------------------------------


def worker(ini: str, url: str, threads: int, out: Path) -> int:
    """``threads`` waiters in this process; prints ``waiting`` once all of them wait, and
    writes each one's result and every statement's time to ``out``."""
    import logging

    import alembic_herd
    from alembic_herd import _wakeup

    # when each waiter's pause last ended on the leader's notification (PostgreSQL LISTEN)
    woke: dict[int, float] = {}
    pause = _wakeup.Wakeup.__call__

    cpu_at_first_wake: list[float] = []

    def timed_pause(self: _wakeup.Wakeup, seconds: float) -> None:
        pause(self, seconds)
        if self.notified:
            if not cpu_at_first_wake:
                cpu_at_first_wake.append(time.process_time())
            woke[threading.get_ident()] = time.monotonic()

    _wakeup.Wakeup.__call__ = timed_pause  # type: ignore[method-assign]
    stamps: list[float] = []
    sa.event.listen(sa.engine.Engine, "before_cursor_execute",
                    lambda *_a: stamps.append(time.monotonic()))
    waiting: set[int] = set()
    lock = threading.Lock()
    said = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "herd_event", None) != "waiting":
                return
            with lock:
                waiting.add(threading.get_ident())
                if len(waiting) == threads and not said.is_set():
                    said.set()
                    print("waiting", flush=True)

    logger = logging.getLogger("alembic_herd")
    logger.handlers[:] = [Seen()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    results: list[dict[str, Any]] = []

    def one() -> None:
        began = time.monotonic()
        try:
            outcome = alembic_herd.wait_until_current(ini, url=url, timeout=f"{BOUND}s")
            results.append({"ok": True, "began": began, "ready": time.monotonic(),
                            "action": outcome.action,
                            "notified": woke.get(threading.get_ident())})
        except Exception as exc:  # a failure is a result
            results.append({"ok": False, "began": began, "ready": time.monotonic(),
                            "error": f"{type(exc).__name__}: {str(exc)[:300]}"})

    pool = [threading.Thread(target=one, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(BOUND)
    # this process's CPU from its first notification to the end: what waking its waiters cost
    wake_cpu = time.process_time() - cpu_at_first_wake[0] if cpu_at_first_wake else None
    out.write_text(json.dumps({"results": results, "stamps": stamps, "wake_cpu": wake_cpu}))
    return 0


# -- the harness ------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Connections to one database (``pg_stat_activity``) every 100 ms."""

    def __init__(self, admin: URL, database: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(admin, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        self.conn = self.engine.connect()
        self.database = database
        self.halt = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
        while not self.halt.is_set():
            count = int(self.conn.scalar(query, {"d": self.database}) or 0)
            self.samples.append((time.monotonic(), count))
            self.halt.wait(SAMPLE_EVERY)

    def xact_commit(self) -> int:
        self.conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(self.conn.scalar(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = :d"),
            {"d": self.database}) or 0)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.conn.close()
        self.engine.dispose()

    def between(self, t0: float, t1: float) -> list[int]:
        return [c for t, c in self.samples if t0 <= t < t1]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_mode(mode: str, *, waiters: int, procs: int, window: float, max_connections: int,
             log: Any, pool: int = POOL_SIZE) -> dict[str, Any]:
    from alembic_herd._embedded import EmbeddedPostgres

    _raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix=f"herd1000-{mode}-"))
    bouncer = None
    try:
        with EmbeddedPostgres(settings={"max_connections": str(max_connections)}) as server:
            database = "herd1000"
            admin = server.admin
            engine = sa.create_engine(admin, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
            role, password = f"bench1000_{secrets.token_hex(4)}", secrets.token_hex(12)
            with engine.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {database}"))
                conn.execute(sa.text(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"))
            engine.dispose()
            direct = admin.set(database=database)
            waiter_url = direct
            if mode == "pgbouncer":
                sys.path.insert(0, str(ROOT))  # the fault suite's PgBouncer, reused
                infra = importlib.import_module("tests.faults.infra")
                bouncer = infra.PgBouncer("127.0.0.1", server.port, {role: password})
                config = bouncer.root / "pgbouncer.ini"  # room for every waiter: reload
                config.write_text(config.read_text().replace(
                    "max_client_conn = 200", f"max_client_conn = {waiters + 100}").replace(
                    f"default_pool_size = {POOL_SIZE}", f"default_pool_size = {pool}"))
                bouncer.proc.send_signal(1)  # SIGHUP: PgBouncer re-reads its config
                time.sleep(1.0)
                waiter_url = bouncer.url(role, password, database)
            release = tmp / "release"
            ini = write_project(tmp / "project", release)
            sampler = Sampler(admin, database)
            sampler.start()
            leader = subprocess.Popen(
                [str(Path(sys.executable).with_name("herd")), "migrate", "-c", str(ini),
                 "--url", direct.render_as_string(hide_password=False)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
            _wait_for_lock(admin, database, leader)
            log(f"{mode}: leader holds the lock; starting {waiters} waiters in {procs} processes")
            started = time.monotonic()
            shares = [waiters // procs + (i < waiters % procs) for i in range(procs)]
            workers = [subprocess.Popen(
                [sys.executable, "-m", "bench.herd1000", "--worker", str(ini),
                 waiter_url.render_as_string(hide_password=False), str(k),
                 str(tmp / f"w{i}.json")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                for i, k in enumerate(shares)]
            for w in workers:  # each says 'waiting' once all its threads wait
                line = w.stdout.readline() if w.stdout else ""
                if line.strip() != "waiting":
                    raise RuntimeError(f"a worker did not start waiting: {line!r} "
                                       f"{(w.stderr.read() if w.stderr else '')[-2000:]}")
            all_waiting = time.monotonic()
            log(f"{mode}: all {waiters} waiting after {all_waiting - started:.1f} s; "
                f"watching {window:.0f} s")
            time.sleep(1.0)
            t0, x0 = time.monotonic(), sampler.xact_commit()
            time.sleep(window)
            t1, x1 = time.monotonic(), sampler.xact_commit()
            release.touch()
            leader_out, _ = leader.communicate(timeout=BOUND)
            leader_exit = time.monotonic()
            for w in workers:
                w.wait(BOUND)
            time.sleep(0.3)
            sampler.stop()
            peak_after = max((c for t, c in sampler.samples if t >= t1), default=0)
            data = [json.loads((tmp / f"w{i}.json").read_text()) for i in range(procs)]
            results = [r for d in data for r in d["results"]]
            stamps = [s for d in data for s in d["stamps"]]
            ready = [r["ready"] - leader_exit for r in results if r["ok"]]
            notified = [r["notified"] - leader_exit for r in results if r.get("notified")]
            check = sa.create_engine(direct, poolclass=sa.NullPool)
            with check.connect() as conn:
                heads = [r[0] for r in conn.execute(sa.text(
                    "SELECT version_num FROM alembic_version"))]
            check.dispose()
            during = sampler.between(t0, t1)
            return {
                "mode": mode, "waiters": waiters, "processes": procs,
                "max_connections": max_connections,
                "pool_size": pool if mode == "pgbouncer" else None,
                "start_to_all_waiting": all_waiting - started,
                "window": t1 - t0,
                "connections_peak": max(c for _, c in sampler.samples),
                "connections_window_median": median(during),
                "connections_window_max": max(during, default=0),
                "connections_peak_after_release": peak_after,
                "statements_per_second": sum(t0 <= s < t1 for s in stamps) / (t1 - t0),
                "xact_commit_per_second": (x1 - x0) / (t1 - t0),
                "ready_after_leader_exit": summary(ready),
                "notified_after_leader_exit": summary(notified),
                # CPU the worker processes spent from their first notification to the end
                # (only where notifications arrived), per waiter
                "wake_cpu_per_waiter": (sum(d["wake_cpu"] for d in data if d["wake_cpu"])
                                        / waiters if any(d["wake_cpu"] for d in data)
                                        else None),
                "release_to_leader_exit": leader_exit - t1,
                "failures": sum(not r["ok"] for r in results) + (len(results) != waiters
                                                                  ) * (waiters - len(results)),
                "errors": sorted({r["error"] for r in results if not r["ok"]})[:3],
                "actions": {a: sum(r.get("action") == a for r in results)
                            for a in ("waited", "current")},
                "leader_exit_code": leader.returncode,
                "leader_output_tail": leader_out[-500:] if leader.returncode else "",
                "heads": heads,
            }
    finally:
        if bouncer is not None:
            bouncer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_lock(admin: URL, database: str, leader: subprocess.Popen[str]) -> None:
    engine = sa.create_engine(admin, poolclass=sa.NullPool)
    until = time.monotonic() + 120
    with engine.connect() as conn:
        while time.monotonic() < until:
            if leader.poll() is not None:
                raise RuntimeError(f"the leader exited {leader.returncode}: "
                                   f"{(leader.stdout.read() if leader.stdout else '')[-1500:]}")
            held = conn.scalar(sa.text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :d"),
                {"d": database})
            conn.rollback()
            if held:
                engine.dispose()
                return
            time.sleep(0.1)
    engine.dispose()
    raise RuntimeError("the leader did not take its lock within 120 s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        ini, url, threads, path = argv[1:5]
        return worker(ini, url, int(threads), Path(path))
    parser = argparse.ArgumentParser(prog="python -m bench.herd1000", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--window", type=float, default=20.0,
                        help="seconds of steady waiting measured before the release")
    parser.add_argument("--modes", default="direct,pgbouncer")
    parser.add_argument("--pool", type=int, default=POOL_SIZE,
                        help=f"PgBouncer's default_pool_size (default {POOL_SIZE})")
    parser.add_argument("--max-connections", type=int, default=1100,
                        help="the server's max_connections (direct: each waiter holds one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="the report whose herd1000 table is re-written")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    args = parser.parse_args(argv)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    from . import machine

    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "argv": argv, "load_before": machine.load(),
                           "machine": machine.describe(), "modes": {}}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        result = run_mode(mode, waiters=args.waiters, procs=args.procs, window=args.window,
                          max_connections=args.max_connections, log=log, pool=args.pool)
        out["modes"][mode] = result
        r = result["ready_after_leader_exit"]
        log(f"{mode}: connections peak {result['connections_peak']}, in the window "
            f"{result['connections_window_median']}; {result['statements_per_second']:.0f} "
            f"statements/s ({result['xact_commit_per_second']:.0f} commits/s on the server); "
            f"leader exit -> ready p50 {r['p50']}, p99 {r['p99']}, max {r['max']}; "
            f"{result['failures']} failed; heads {result['heads']}")
    out["load_after"] = machine.load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    log(f"wrote {args.out}")
    latest = ROOT / "bench" / "results" / "latest.json"
    if args.out == DEFAULT_OUT and latest.exists():  # make bench's results carry it along
        results = json.loads(latest.read_text())
        results["herd1000"] = out
        latest.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.no_report:
        from .report import herd1000_table, write_block

        write_block(args.report, "herd1000", herd1000_table(out))
        log(f"wrote the herd1000 table of {args.report}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
