"""What herd does when things go wrong, against real databases and real processes.

A migration that raises, a leader killed with SIGKILL mid-revision (PostgreSQL rolls it
back; MariaDB leaves it half-applied and herd refuses to guess), a lock held by someone
else past the timeout, waiters that must not hold transactions or extra connections, a
worker waiting for a leader that fails, and a database ahead of the code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd import (
    DatabaseAheadError,
    IncompleteRevisionError,
    LeaderFailedError,
    LockTimeoutError,
)
from alembic_herd._database import HOST, create_engine
from alembic_herd.locks import LockKey, create_lock
from conftest import PROJECTS, make_database, render
from herd_harness import CHILD, release

FAIL = str(PROJECTS / "fail-raise" / "alembic.ini")
SLOW = str(PROJECTS / "slow-partial" / "alembic.ini")
HERDSET = str(PROJECTS / "herdset" / "alembic.ini")
SAFETY = 120.0  # seconds: a bound on waiting for what must happen, never a measurement

fresh_database = contextlib.contextmanager(make_database)


# -- helpers ------------------------------------------------------------------------------


def query(url: URL, sql: str, **params: Any) -> list[Any] | None:
    """Rows of ``sql``, or None when a table it reads does not exist (yet)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    except sa.exc.ProgrammingError:
        return None
    except sa.exc.OperationalError as exc:  # sqlite reports a missing table this way
        if "no such table" in str(exc):
            return None
        raise
    finally:
        engine.dispose()


def versions(url: URL) -> list[str] | None:
    rows = query(url, "SELECT version_num FROM alembic_version")
    return None if rows is None else sorted(r[0] for r in rows)


def history(url: URL) -> list[dict[str, Any]]:
    rows = query(url, "SELECT id, attempt, revision, status, error, host, pid "
                      "FROM herd_history ORDER BY id")
    keys = ("id", "attempt", "revision", "status", "error", "host", "pid")
    return [dict(zip(keys, r, strict=True)) for r in rows or []]


def has_table(url: URL, name: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sa.inspect(conn).has_table(name)
    finally:
        engine.dispose()


def eventually(fn: Callable[[], Any], what: str, proc: subprocess.Popen[str] | None = None,
               ) -> Any:
    """Poll ``fn`` until it returns something truthy (bounded by SAFETY seconds)."""
    deadline = time.monotonic() + SAFETY
    while True:
        value = fn()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process exited {proc.returncode} before {what}: {out} {err[-2000:]}")
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def replica(mode: str, config: str, url: URL, **env: str) -> Iterator[subprocess.Popen[str]]:
    """One replica process, released at once; killed on the way out if still alive. The
    revisions that mark their start (HERD_TEST_MARKS) do so in a folder of its own."""
    marks = tempfile.mkdtemp(prefix="herd-marks-")
    proc = subprocess.Popen([sys.executable, str(CHILD), mode, config, render(url)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HERD_TEST_MARKS": marks, **env})
    MARKS[proc.pid] = Path(marks)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


MARKS: dict[int, Path] = {}  # a replica's pid: where its revisions mark their start


def started(proc: subprocess.Popen[str], revision: str) -> bool:
    """Whether ``revision``'s code started in ``proc`` (a revision that marks its start:
    the attempt log cannot say, its rows are written before the first revision starts)."""
    return (MARKS[proc.pid] / revision).exists()


# -- a migration that raises --------------------------------------------------------------

RAISE_CASES = [
    pytest.param("postgresql", False, id="postgresql-one-transaction"),
    pytest.param("postgresql", True, id="postgresql-transaction-per-migration"),
    pytest.param("mysql", True, id="mysql-transaction-per-migration"),
    pytest.param("sqlite", False, id="sqlite"),
]


@pytest.mark.herd
@pytest.mark.parametrize(("dialect", "tpm"), RAISE_CASES)
def test_a_failing_migration_fails_its_leader_and_every_waiter_reports_that_failure(
        dialect: str, tpm: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """In a herd of 8 on a migration that raises, exactly one process runs it and exits 8
    (MigrationError); the other seven exit 9 (LeaderFailedError) naming the leader and its
    error, and the history records the failure."""
    with fresh_database(dialect, request, tmp_path) as url:
        results = release(8, ["herd", FAIL, render(url)],
                          env={"HERD_TEST_TPM": "1" if tpm else "0", "HERD_TEST_FAIL_DELAY": "2"})
        codes = Counter(r.returncode for r in results)
        assert codes == {8: 1, 9: 7}, [(r.returncode, r.report, r.stderr[-500:])
                                       for r in results]
        leader = next(r for r in results if r.returncode == 8)
        assert leader.report["type"] == "MigrationError"
        assert "revision f2 failed" in leader.report["error"]
        assert "boom: bad data" in leader.report["error"]

        rows = history(url)
        failed = [r for r in rows if r["revision"] == "f2"]
        assert [r["status"] for r in failed] == ["failed"], rows
        row = failed[0]
        assert "boom: bad data" in row["error"]
        assert (row["host"], row["pid"]) != (HOST, os.getpid())
        for waiter in (r for r in results if r.returncode == 9):
            assert waiter.report["type"] == "LeaderFailedError"
            message = waiter.report["error"]
            assert f"pid {row['pid']} on host {row['host']}" in message
            assert "boom: bad data" in message and "revision f2" in message

        # herd's account of revision 1 agrees with the version table
        at = versions(url) or []
        [f1] = [r for r in rows if r["revision"] == "f1"]
        assert f1["status"] == ("applied" if "f1" in at else "rolled back"), (rows, at)
        assert f1["attempt"] == row["attempt"]
        if dialect == "postgresql" and not tpm:
            assert at == [] and f1["status"] == "rolled back"
            assert not has_table(url, "things")
        if tpm:
            assert at == ["f1"] and f1["status"] == "applied"


ENV_FAILS = str(PROJECTS / "bad-envpy" / "alembic.ini")


@pytest.mark.herd
@pytest.mark.parametrize("how", ["raise", "import"])
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_an_env_py_that_fails_is_recorded_and_every_waiter_reports_it(
        dialect: str, how: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """In a herd of 6 whose env.py fails before any revision (it raises, or imports a module
    that does not exist), one replica runs it and exits 8; the others exit 9 naming env.py
    and its error (they neither repeat it nor wait out their timeout); the attempt log has
    one 'failed' row for env.py; once env.py is fixed the next run migrates (MariaDB is not
    blocked as if a revision were half-applied)."""
    error = {"raise": "settings.DATABASE_POOL is not configured",
             "import": "No module named 'app_settings_that_do_not_exist'"}[how]
    with fresh_database(dialect, request, tmp_path) as url:
        results = release(6, ["herd", ENV_FAILS, render(url)],
                          env={"HERD_TEST_ENV_FAILS": how, "HERD_TEST_ENV_DELAY": "2"})
        codes = Counter(r.returncode for r in results)
        assert codes == {8: 1, 9: 5}, [(r.returncode, r.report) for r in results]
        leader = next(r for r in results if r.returncode == 8)
        assert "env.py (before any revision ran) failed" in leader.report["error"]
        for waiter in (r for r in results if r.returncode == 9):
            assert "failed in env.py before any revision ran" in waiter.report["error"]
            assert error in waiter.report["error"]
        rows = history(url)
        assert [(r["revision"], r["status"]) for r in rows] == [("env.py", "failed")], rows
        assert error in rows[0]["error"]

        fixed = alembic_herd.upgrade(ENV_FAILS, url=render(url))
        assert fixed.action == "migrated" and fixed.revisions == ("a1",)


def herd_sessions(url: URL, pids: list[int]) -> list[tuple[int, str, str | None, str]]:
    """(client pid, state, xact_start, last statement) of every session herd opened for
    these processes: herd names them 'herd <host> <pid>', or 'herd <pid> <since> <host>'
    once they hold the lock."""
    rows = query(url, "SELECT application_name, state, xact_start::text, query "
                      "FROM pg_stat_activity WHERE application_name LIKE 'herd %'") or []
    found = []
    for name, state, xact, last in rows:
        parts = name.split(" ")
        found += [(pid, state, xact, last) for pid in pids
                  if parts[1:3] == [HOST, str(pid)] or parts[1:2] == [str(pid)]]
    return found


def polling_the_lock(url: URL, pid: int) -> bool:
    """Whether process ``pid`` is in its wait loop (it read the attempt log before that)."""
    return any("pg_try_advisory_lock" in s[3] for s in herd_sessions(url, [pid]))


@pytest.mark.herd
def test_replicas_that_start_while_the_leader_runs_the_failing_revision_report_its_failure(
        pg: URL, tmp_path: Path) -> None:
    """Replicas that start after the leader began the failing revision (a rolling deploy)
    report the leader's failure (exit 9) instead of running the broken migration again."""
    gate = tmp_path / "gate"
    with replica("herd", FAIL, pg, HERD_TEST_FAIL_GATE=str(gate)) as leader, \
            contextlib.ExitStack() as stack:
        eventually(lambda: started(leader, "f2"), "the leader to start f2", leader)
        late = [stack.enter_context(replica("herd", FAIL, pg)) for _ in range(3)]
        for proc in late:
            eventually(partial(polling_the_lock, pg, proc.pid), "a late replica to poll the lock",
                       proc)
        gate.touch()
        outputs = [(p.communicate(timeout=SAFETY), p.returncode) for p in late]
        leader.wait(SAFETY)
        assert leader.returncode == 8
    assert [code for _, code in outputs] == [9, 9, 9], outputs
    assert all(f"pid {leader.pid} on host {HOST}" in out and "LeaderFailedError" in out
               for (out, _), _ in outputs)
    assert [r["status"] for r in history(pg) if r["revision"] == "f2"] == ["failed"]


# -- a leader killed mid-migration --------------------------------------------------------


@pytest.mark.parametrize("tpm", [False, True], ids=["one-transaction", "transaction-per-migration"])
def test_postgresql_leader_killed_mid_migration_is_rolled_back_and_the_next_upgrade_finishes(
        pg: URL, tpm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a PostgreSQL leader is SIGKILLed inside a revision, the next upgrade reaches head
    with the data migration's row exactly once, and the history marks the killed attempt
    'interrupted' (its earlier revisions 'rolled back' in one-transaction mode)."""
    tpm_env = "1" if tpm else "0"
    with replica("herd", SLOW, pg, HERD_TEST_SLOW="300", HERD_TEST_TPM=tpm_env) as leader:
        eventually(lambda: started(leader, "s2"), "the leader to start s2", leader)
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(SAFETY)

    monkeypatch.setenv("HERD_TEST_TPM", tpm_env)
    monkeypatch.setenv("HERD_TEST_SLOW", "0")
    outcome = alembic_herd.upgrade(SLOW, url=render(pg), lock_timeout=SAFETY)
    assert outcome.action == "migrated"
    assert outcome.heads == ("s3",)
    assert versions(pg) == ["s3"]
    assert query(pg, "SELECT count(*) FROM items WHERE name = 'seeded'") == [(1,)]

    rows = history(pg)
    killed = {r["revision"]: r["status"] for r in rows if r["pid"] == leader.pid}
    rerun = [(r["revision"], r["status"]) for r in rows if r["pid"] != leader.pid]
    # per migration s1 committed and s2 was in progress; in one transaction nothing
    # committed and which revision was running is not recorded (its rows were written
    # before the first started): the attempt's first row says it was interrupted, the
    # rows of the revisions after it go
    assert killed == ({"s1": "applied", "s2": "interrupted"} if tpm
                      else {"s1": "interrupted"}), rows
    expected = ["s2", "s3"] if tpm else ["s1", "s2", "s3"]
    assert rerun == [(rev, "applied") for rev in expected]
    assert outcome.revisions == tuple(expected)


def test_a_leader_that_loses_its_lock_session_mid_revision_stops_then_starts_over(
        pg: URL) -> None:
    """A leader whose lock session is terminated while a revision runs stops before recording
    or starting anything more (LockLostError; its one transaction rolls back), then connects
    again, retakes the lock within its deadline and finishes: the data migration ran once."""
    with replica("herd", SLOW, pg, HERD_TEST_SLOW="3", HERD_TEST_TPM="0") as leader:
        eventually(lambda: started(leader, "s2"), "the leader to start s2", leader)
        terminated = query(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name LIKE :name", name=f"herd {leader.pid} %")
        assert terminated == [(True,)]  # exactly the lock session: the migration's is untouched
        out, err = leader.communicate(timeout=SAFETY)
    assert leader.returncode == 0, (out, err[-2000:])
    assert '"revisions": ["s1", "s2", "s3"]' in out
    assert "lost the connection" in err and "connecting again" in err
    assert versions(pg) == ["s3"]
    assert query(pg, "SELECT count(*) FROM items WHERE name = 'seeded'") == [(1,)]
    rows = history(pg)
    # the lost session could record nothing: starting over, the leader accounts for its
    # own first attempt as for a dead leader's (one transaction: interrupted, none applied)
    assert [(r["revision"], r["status"]) for r in rows] == [
        ("s1", "interrupted"), ("s1", "applied"), ("s2", "applied"), ("s3", "applied")]
    assert {r["pid"] for r in rows} == {leader.pid}
    assert len({r["attempt"] for r in rows}) == 2


@pytest.mark.parametrize("eager", ["0", "1"], ids=["tables-after-s1", "tables-before"])
def test_sqlite_leader_killed_after_a_commit_leaves_the_log_agreeing_with_the_versions(
        request: pytest.FixtureRequest, tmp_path: Path, eager: str) -> None:
    """SQLite has one writer, so herd keeps its 'running' rows in memory; a revision that
    committed still has its 'applied' row in the log when the leader is SIGKILLed in the
    next one (before, every row waited for the end of the run, and s1 had none). s1's row
    goes in right after its commit, with herd's tables (fresh database), or, where the
    tables exist, inside s1's own transaction on the migration's connection."""
    with fresh_database("sqlite", request, tmp_path) as url:
        with replica("herd", SLOW, url, HERD_TEST_SLOW="300",
                     HERD_TEST_EAGER_TABLES=eager) as leader:
            eventually(lambda: versions(url) == ["s1"] and has_table(url, "partial_a"),
                       "the leader to be inside s2", leader)
            os.kill(leader.pid, signal.SIGKILL)
            leader.wait(SAFETY)
        assert versions(url) == ["s1"]
        assert [(r["revision"], r["status"], r["pid"]) for r in history(url)] == [
            ("s1", "applied", leader.pid)]


def test_mariadb_leader_killed_mid_revision_is_refused_until_an_operator_resolves_it(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """After a MariaDB leader is SIGKILLed inside a non-transactional revision, upgrade
    refuses with IncompleteRevisionError (naming the revision, the dead leader and 'herd
    resolve') without applying anything, until an operator repairs it and calls resolve()."""
    with fresh_database("mysql", request, tmp_path) as url:
        with replica("herd", SLOW, url, HERD_TEST_SLOW="300") as leader:
            eventually(lambda: started(leader, "s2") and has_table(url, "partial_a"),
                       "the leader to be inside s2", leader)
            os.kill(leader.pid, signal.SIGKILL)
            leader.wait(SAFETY)

        monkeypatch.setenv("HERD_TEST_SLOW", "0")
        before, rows_before = versions(url), None
        assert before == ["s1"]
        for _ in range(2):  # refused every time until resolved, not only the first time
            with pytest.raises(IncompleteRevisionError) as err:
                alembic_herd.upgrade(SLOW, url=render(url), lock_timeout=SAFETY)
            message = str(err.value)
            assert "revision s2" in message
            assert f"pid {leader.pid} on host {HOST}" in message
            assert "herd resolve s2" in message
            assert err.value.revision == "s2" and err.value.exit_code == 10
            assert versions(url) == before
            assert not has_table(url, "partial_b")
            # the first refusal accounts for the dead leader's rows (s1 committed, s2 was in
            # progress, s3's planned row goes), the second changes nothing
            rows_before = rows_before or history(url)
            assert history(url) == rows_before
            assert [(r["revision"], r["status"]) for r in rows_before] == [
                ("s1", "applied"), ("s2", "running")]

        with create_engine(url).connect() as conn:  # the operator's repair
            conn.execute(sa.text("DROP TABLE partial_a"))
        assert alembic_herd.resolve(SLOW, "s2", url=render(url)) == 1

        outcome = alembic_herd.upgrade(SLOW, url=render(url), lock_timeout=SAFETY)
        assert outcome.action == "migrated" and outcome.revisions == ("s2", "s3")
        assert versions(url) == ["s3"]
        assert has_table(url, "partial_a") and has_table(url, "partial_b")
        assert query(url, "SELECT count(*) FROM items WHERE name = 'seeded'") == [(1,)]
        statuses = [(r["revision"], r["status"], r["pid"] == leader.pid) for r in history(url)]
        assert statuses == [("s1", "applied", True), ("s2", "resolved", True),
                            ("s2", "applied", False), ("s3", "applied", False)]


STOP_CASES = [
    pytest.param("postgresql", "0", id="postgresql-one-transaction"),
    pytest.param("postgresql", "1", id="postgresql-transaction-per-migration"),
    pytest.param("mysql", "1", id="mysql"),
]


@pytest.mark.parametrize(("dialect", "tpm"), STOP_CASES)
def test_sigterm_to_a_leader_mid_revision_is_recorded_and_frees_the_lock(
        dialect: str, tpm: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`herd migrate` SIGTERMed inside revision s2 (proved: s2 is running and its first
    table exists) exits 143 with one line naming the signal and s2; the attempt log agrees
    with the version table (s2 'interrupted' where DDL is transactional, 'failed' on MariaDB
    where it may be partly applied); the lock is free at once: the next run migrates, or on
    MariaDB refuses until 'herd resolve'."""
    with fresh_database(dialect, request, tmp_path) as url:
        marks = tmp_path / "marks"
        marks.mkdir()
        leader = subprocess.Popen(
            [sys.executable, "-m", "alembic_herd.cli", "migrate", "-c", SLOW, "--url",
             render(url)], env={**os.environ, "HERD_TEST_SLOW": "300", "HERD_TEST_TPM": tpm,
                                "HERD_TEST_MARKS": str(marks)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        MARKS[leader.pid] = marks
        try:
            eventually(lambda: started(leader, "s2") and (dialect == "postgresql"
                                                        or has_table(url, "partial_a")),
                       "the leader to be inside s2", leader)
            leader.send_signal(signal.SIGTERM)
            _, err = leader.communicate(timeout=SAFETY)
        finally:
            if leader.poll() is None:
                leader.kill()
        assert leader.returncode == 143, err
        [line] = [x for x in err.splitlines() if x.startswith("herd: error:")]
        assert line.startswith("herd: error: stopped by SIGTERM during revision s2"), line

        at = versions(url) or []
        expected_s1 = "applied" if tpm == "1" else "rolled back"
        s2 = "failed" if dialect == "mysql" else "interrupted"
        assert [(r["revision"], r["status"]) for r in history(url)] == [
            ("s1", expected_s1), ("s2", s2)]
        assert at == (["s1"] if tpm == "1" else [])

        monkeypatch.setenv("HERD_TEST_SLOW", "0")
        monkeypatch.setenv("HERD_TEST_TPM", tpm)
        if dialect == "mysql":
            with pytest.raises(IncompleteRevisionError):
                alembic_herd.upgrade(SLOW, url=render(url), lock_timeout=5)
        else:  # lock_timeout=5: the lock must be free now, not after a keepalive or a lease
            outcome = alembic_herd.upgrade(SLOW, url=render(url), lock_timeout=5)
            assert outcome.action == "migrated" and versions(url) == ["s3"]


# -- waiting ------------------------------------------------------------------------------


@contextlib.contextmanager
def lock_held_elsewhere(url: URL, how: str) -> Iterator[int]:
    """Hold herd's PostgreSQL advisory lock for HERDSET from this test; yields the
    session's backend pid. ``how``: through herd's own lock class, or a foreign session."""
    key = LockKey.for_version_table("alembic_version", None, None)
    engine = create_engine(url, application_name="ops console")
    conn = engine.connect()
    try:
        if how == "herd":
            lock = create_lock("advisory", conn, key)
            assert lock.try_acquire()
        else:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key.as_int64()})
        yield int(conn.scalar(sa.text("SELECT pg_backend_pid()")))
    finally:
        conn.close()
        engine.dispose()


@pytest.mark.parametrize("how", ["herd", "foreign"])
def test_lock_timeout_names_the_holder_and_what_to_do(pg: URL, how: str) -> None:
    """When another session holds the lock past lock_timeout, upgrade raises LockTimeoutError
    naming the holder (with a holder attribute) and the next step, and changes nothing."""
    with lock_held_elsewhere(pg, how) as backend_pid, pytest.raises(LockTimeoutError) as err:
        alembic_herd.upgrade(HERDSET, url=render(pg), lock_timeout=2)
    message, holder = str(err.value), err.value.holder
    assert err.value.exit_code == 6
    assert holder is not None
    if how == "herd":
        assert (holder.host, holder.pid) == (HOST, os.getpid())
        assert f"pid {os.getpid()} on host {HOST}" in message
    else:
        assert holder.detail is not None and str(backend_pid) in holder.detail
        assert "ops console" in message
    assert "--lock-timeout" in message and "herd status" in message
    assert "4 revision(s) behind" in message
    assert versions(pg) is None and history(pg) == []


def test_resolve_waits_for_a_running_migration_then_names_it(pg: URL) -> None:
    """resolve() takes the lock like a leader: while a migration holds it, it raises
    LockTimeoutError at its lock_timeout naming the holder and saying to wait for it, and
    resolves nothing."""
    with lock_held_elsewhere(pg, "herd"), pytest.raises(LockTimeoutError) as err:
        alembic_herd.resolve(HERDSET, "a1", url=render(pg), lock_timeout=0.5)
    message = str(err.value)
    assert f"pid {os.getpid()} on host {HOST}" in message
    assert message.endswith("a migration is running - wait for it, then resolve")
    assert err.value.holder is not None and err.value.holder.pid == os.getpid()
    assert history(pg) == []


@pytest.mark.herd
def test_waiters_hold_no_transaction_and_one_connection_each(pg: URL) -> None:
    """Replicas waiting for the lock each keep exactly one connection, and it is never left
    'idle in transaction' (a waiter must not block the leader's DDL or vacuum)."""
    with contextlib.ExitStack() as replicas:
        with lock_held_elsewhere(pg, "herd"):
            procs = [replicas.enter_context(replica("herd", HERDSET, pg)) for _ in range(3)]
            pids = [p.pid for p in procs]
            eventually(lambda: {s[0] for s in herd_sessions(pg, pids)} == set(pids),
                       "every waiter to connect")
            for _ in range(15):
                sessions = herd_sessions(pg, pids)
                per_process = Counter(s[0] for s in sessions)
                assert max(per_process.values()) == 1, sessions
                assert all(s[1] in ("idle", "active") for s in sessions), sessions
                assert all(s[2] is None for s in sessions if s[1] == "idle"), sessions
                time.sleep(0.2)
            assert all(p.poll() is None for p in procs)  # still waiting
        for proc in procs:  # the lock is free now: they finish on their own
            proc.wait(SAFETY)
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert versions(pg) == ["d4"]
    assert herd_sessions(pg, pids) == []


@pytest.mark.parametrize("order", ["worker-first", "leader-first"])
def test_wait_until_current_reports_the_leaders_failure_instead_of_timing_out(
        pg: URL, order: str, tmp_path: Path) -> None:
    """A worker in wait_until_current raises LeaderFailedError with the leader's error as
    soon as the leader's migration fails, whether it started before or during the attempt."""
    result: dict[str, BaseException] = {}
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "herd_event", None) == "waiting":
                waiting.set()

    logger, handler = logging.getLogger("alembic_herd"), Waiting()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def worker() -> None:
        try:
            alembic_herd.wait_until_current(FAIL, url=render(pg), timeout=SAFETY)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    gate = tmp_path / "gate"
    if order == "worker-first":
        thread.start()
    with replica("herd", FAIL, pg, HERD_TEST_FAIL_GATE=str(gate)) as leader:
        eventually(lambda: started(leader, "f2"), "the leader to start f2", leader)
        if order == "leader-first":
            thread.start()
        # the worker is in its wait loop: it has read the attempt log's baseline and said
        # that it waits (then it looks at the heads, and at the log when the failed leader
        # notifies it or when it reports)
        eventually(waiting.is_set, "the worker to wait", leader)
        gate.touch()
        leader.wait(SAFETY)
        thread.join(SAFETY)
    logger.removeHandler(handler)
    logger.setLevel(level)
    assert leader.returncode == 8
    error = result.get("error")
    assert isinstance(error, LeaderFailedError), repr(error)
    assert error.exit_code == 9
    assert (error.pid, error.host, error.revision) == (leader.pid, HOST, "f2")
    assert "boom: bad data" in str(error) and f"pid {leader.pid}" in str(error)


# -- the database ahead of the code -------------------------------------------------------


def test_a_database_ahead_of_the_code_is_refused_naming_the_revision(db: URL) -> None:
    """A version table holding a revision the scripts lack raises DatabaseAheadError (exit 5)
    naming it, from upgrade and wait_until_current alike, and changes nothing."""
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('zz99')"))
    engine.dispose()
    for call in (lambda: alembic_herd.upgrade(HERDSET, url=render(db), lock_timeout=SAFETY),
                 lambda: alembic_herd.wait_until_current(HERDSET, url=render(db), timeout=5)):
        with pytest.raises(DatabaseAheadError) as err:
            call()
        assert err.value.exit_code == 5
        assert err.value.unknown == ("zz99",)
        assert "zz99" in str(err.value)
    assert versions(db) == ["zz99"]
    assert not has_table(db, "accounts") and not has_table(db, "herd_history")



@pytest.mark.parametrize("backend", ["mysql", "sqlite"])
def test_a_failed_revision_without_transactional_ddl_blocks_until_resolved(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """On MySQL/MariaDB and SQLite (no transactional DDL) a revision that failed may be half
    applied: the next upgrade refuses with IncompleteRevisionError, changing nothing, until
    an operator resolves it; then the revision runs again."""
    with fresh_database(backend, request, tmp_path) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERD_TEST_FAIL_DELAY", "0")
        with pytest.raises(alembic_herd.MigrationError) as failed:
            alembic_herd.upgrade(FAIL, url=render(url))
        assert "may be partly applied" in str(failed.value)
        assert "herd resolve f2" in str(failed.value)
        with pytest.raises(IncompleteRevisionError) as err:
            alembic_herd.upgrade(FAIL, url=render(url))
        assert err.value.revision == "f2"
        assert "boom: bad data" in str(err.value) and "herd resolve f2" in str(err.value)
        assert alembic_herd.resolve(FAIL, "f2", url=render(url)) == 1
        with pytest.raises(alembic_herd.MigrationError):  # the bug is still there
            alembic_herd.upgrade(FAIL, url=render(url))


def test_a_waiter_whose_connection_dies_while_naming_the_holder_reconnects(
        pg: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """Naming the lock holder is best effort, but a dead connection must not be swallowed
    there: the next statement on it raised PendingRollbackError, which no replica recovers
    from (the fault suite's server-restart scenario hit it when the restart came as a
    waiter first asked who held the lock). The waiter must reconnect and carry on."""
    from alembic_herd.locks.postgresql import AdvisoryLock

    engine = create_engine(pg)
    admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    other_conn = engine.connect()
    other = create_lock("advisory", other_conn,
                        LockKey.for_version_table("alembic_version", None, None))
    assert other.try_acquire()  # so that herd waits and asks who holds the lock
    original = AdvisoryLock.holder
    killed: list[int] = []

    def holder(self: AdvisoryLock) -> Any:
        if not killed:  # the first time: the server drops this session under the waiter
            pid = self.conn.scalar(sa.text("SELECT pg_backend_pid()"))
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            killed.append(pid)
            threading.Timer(1.0, other.release).start()
        return original(self)

    monkeypatch.setattr(AdvisoryLock, "holder", holder)
    try:
        outcome = alembic_herd.upgrade(HERDSET, url=pg, lock_timeout="60s")
    finally:
        other_conn.close()
        engine.dispose()
        admin.dispose()
    assert killed and outcome.action == "migrated"


# -- herd's own bugs ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_an_internal_error_between_revisions_is_never_recorded_as_a_failed_revision(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in herd's own bookkeeping (History.advance raising before the second revision)
    propagates as itself, not as a MigrationError; the attempt log records it as herd's
    ('interrupted', or 'applied' for a revision that committed), never as a 'failed'
    revision, so the next upgrade finishes (MariaDB is not blocked until 'herd resolve')."""
    from alembic_herd._history import History

    original = History.advance
    calls: list[str] = []

    def advance(self: History, done: Any, attempt: str, revision: str, **kw: Any) -> Any:
        calls.append(revision)
        if len(calls) == 2:
            raise RuntimeError("bug in herd's bookkeeping")
        return original(self, done, attempt, revision, **kw)

    with fresh_database(backend, request, tmp_path) as url:
        monkeypatch.setenv("HERD_TEST_TPM", "0")
        with monkeypatch.context() as patched:
            patched.setattr(History, "advance", advance)
            with pytest.raises(RuntimeError, match="bug in herd's bookkeeping"):
                alembic_herd.upgrade(HERDSET, url=render(url), lock_timeout=SAFETY)
        assert calls == ["a1", "b2"]
        [a1] = history(url)
        if backend == "postgresql":  # one transaction: a1 rolled back with the rest
            assert versions(url) is None
            assert a1["status"] == "interrupted"
            assert a1["error"].startswith("herd internal error: RuntimeError: bug in herd's")
        else:  # no transactional DDL: a1 committed before herd failed
            assert versions(url) == ["a1"]
            assert (a1["status"], a1["error"]) == ("applied", None)

        outcome = alembic_herd.upgrade(HERDSET, url=render(url), lock_timeout=SAFETY)
        assert outcome.action == "migrated" and versions(url) == ["d4"]
        expected = ["a1", "b2", "c3", "d4"] if backend == "postgresql" else ["b2", "c3", "d4"]
        assert outcome.revisions == tuple(expected)
        assert "failed" not in {r["status"] for r in history(url)}
