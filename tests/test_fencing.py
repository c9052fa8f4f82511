"""Fencing checked by the database, and one lock namespace across lock kinds.

Real replica processes on PostgreSQL and MariaDB. A leader with ``--lock table`` is
SIGSTOPped inside a data migration (proved: the revision wrote its mark and its attempt-log
row is ``running``) past its 2 s lease; another replica takes the lease; the first is
SIGCONTed. With fencing the database refuses the stale holder's commit; the control (the
lease's fence replaced by the base class's, which checks nothing) shows the stale commit.
Then a herd of 8, half on the advisory lock and half on the lease, released at once: one
leader; the control (no check of the other kind) shows two.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd import IncompleteRevisionError, LockHeldError, LockLostError, LockTimeoutError
from alembic_herd._database import create_engine
from alembic_herd._durations import Deadline
from alembic_herd.locks import LockKey, choose, create_lock
from conftest import PROJECTS, make_database, render
from conftest import rows as query

CONFIG = str(PROJECTS / "fencing" / "alembic.ini")
SAFETY = 120.0  # seconds: a bound on waiting for what must happen, never a measurement
fresh_database = contextlib.contextmanager(make_database)

# A replica (alembic_herd.demo.replica) with one protection switched off for the control.
DRIVER = """
import sys
from alembic_herd.demo import replica
from alembic_herd.locks import Lock
from alembic_herd.locks.lease import LeaseLock
if sys.argv[1] == "no-fence":  # the lease checks nothing inside the revision's transaction
    LeaseLock.fence = Lock.fence
elif sys.argv[1] == "no-rivals":  # a lock never looks at the other kinds
    Lock.rival_holder = lambda self: None
sys.exit(replica.main(sys.argv[2:]))
"""



def prepare(url: URL) -> None:
    """The data table f1 writes to, and an empty version table (a database at base)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE seeded (name VARCHAR(20) NOT NULL)"))
        conn.execute(sa.text("CREATE TABLE alembic_version "
                             "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    engine.dispose()


def seeded(url: URL) -> int:
    return int(query(url, "SELECT count(*) FROM seeded")[0][0])


def versions(url: URL) -> list[str]:
    return sorted(r[0] for r in query(url, "SELECT version_num FROM alembic_version"))


def attempts(url: URL) -> list[tuple[str, str, int]]:
    """(revision, status, pid) of every attempt-log row, oldest first."""
    return [(r[0], r[1], int(r[2])) for r in
            query(url, "SELECT revision, status, pid FROM herd_history ORDER BY id")]


def start(url: URL, lock: str, *, control: str = "", **env: str) -> subprocess.Popen[str]:
    """One replica, ready at the barrier (write ``go`` to release it)."""
    program = ([sys.executable, "-c", DRIVER, control] if control
               else [sys.executable, "-m", "alembic_herd.demo.replica"])
    proc = subprocess.Popen(
        [*program, "herd", CONFIG, "-", "--lock", lock, "--lease-ttl", "2", "--timeout", "90"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HERD_REPLICA_URL": render(url), "HERD_TEST_TPM": "1", **env})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr
    return proc


def go(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The replica's report (its last stdout line), once it exited."""
    out, err = proc.communicate(timeout=SAFETY)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    assert lines, f"no report (exit {proc.returncode}): {err[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["exit_code"] == proc.returncode, err[-2000:]
    return result


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (state T in the kernel's process table)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@contextlib.contextmanager
def reaped(*procs: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.communicate()


def paused_leader(url: URL, tmp_path: Path, control: str) -> dict[str, Any]:
    """The scenario: a leader paused inside f1 past its lease, a replica taking over, the
    first resumed. What each did, and the database right after the first exited."""
    mark = tmp_path / f"mark{control}"
    old = start(url, "table", control=control or "fenced", HERD_TEST_MARK=str(mark))
    with reaped(old):
        go(old)
        deadline = time.monotonic() + SAFETY
        while not (mark.exists() and ("f1", "running", old.pid) in attempts(url)):
            assert old.poll() is None and time.monotonic() < deadline, old.communicate()
            time.sleep(0.05)
        os.kill(old.pid, signal.SIGSTOP)  # inside f1: its row inserted, not committed
        new = start(url, "table")
        with reaped(new):
            go(new)
            taker = report(new)
        assert stopped(old.pid), "the first leader must still be paused during the take-over"
        Path(f"{mark}.go").touch()
        os.kill(old.pid, signal.SIGCONT)
        first = report(old)
    return {"first": first, "taker": taker, "seeded": seeded(url), "versions": versions(url)}


@pytest.mark.herd
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_leader_paused_past_its_lease_commits_nothing_and_exits_11(
        dialect: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A `--lock table` leader SIGSTOPped inside a data migration past its lease: when it
    resumes the database refuses its commit (the row exists once), it exits 11, and the
    attempt log agrees with the version table. PostgreSQL: its revision is 'interrupted'
    (rolled back), the replica that took the lease migrated meanwhile. MariaDB (DDL is not
    transactional, so the revision may be partly applied): the replica that took the lease
    refused the revision left running (exit 10), the first records it 'failed' - the same
    verdict, not an 'interrupted' that lets the next run repeat half-applied DDL - and runs
    stop on it until 'herd resolve'. The control commits the stale write.

    herd's attempt log exists before f1 here, as on every deploy after the first (on a
    first deploy it appears only after the first revision: docs/design.md, "herd's
    tables"), so that the taker can find f1's row."""
    monkeypatch.setenv("HERD_TEST_EAGER_TABLES", "1")
    with fresh_database(dialect, request, tmp_path) as url:
        prepare(url)
        run = paused_leader(url, tmp_path, "")
        assert run["first"]["exit_code"] == LockLostError.exit_code, run["first"]
        assert "rolled it back" in run["first"]["error"]
        if dialect == "postgresql":
            assert run["taker"]["action"] == "migrated", run["taker"]
            assert (run["seeded"], run["versions"]) == (1, ["f2"])
        else:  # the stale holder committed nothing; its running row was in the way
            assert run["taker"]["exit_code"] == IncompleteRevisionError.exit_code, run["taker"]
            assert (run["seeded"], run["versions"]) == (0, [])
            # and it says the same as the taker: its DDL (had f1 any) is not undone by a
            # rollback, so f1 may be partly applied - every run stops on it until resolved
            last = start(url, "table")
            with reaped(last):
                go(last)
                refused = report(last)
            assert refused["exit_code"] == IncompleteRevisionError.exit_code, refused
            assert "herd resolve f1" in refused["error"], refused
            alembic_herd.resolve(CONFIG, "f1", url=render(url))
            last = start(url, "table")
            with reaped(last):
                go(last)
                assert report(last)["action"] == "migrated"
        assert (seeded(url), versions(url)) == (1, ["f2"])
        rows = attempts(url)
        first = [(rev, status) for rev, status, pid in rows if pid == run["first"]["pid"]]
        verdict = "interrupted" if dialect == "postgresql" else "resolved"  # failed, resolved
        assert first == [("f1", verdict)], rows
        assert not [r for r in rows if r[1] == "failed"], rows
        applied = Counter(rev for rev, status, _ in rows if status == "applied")
        assert applied == Counter({"f1": 1, "f2": 1}), rows

    with fresh_database(dialect, request, tmp_path) as url:  # the control
        prepare(url)
        run = paused_leader(url, tmp_path, "no-fence")
        stale = 2 if dialect == "postgresql" else 1  # PostgreSQL: the taker's row too
        assert run["seeded"] == stale, f"without the fence the stale leader commits: {run}"
        assert "f1" in run["versions"], run


@pytest.mark.herd
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_replicas_on_different_lock_kinds_elect_one_leader(
        dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Eight replicas, half on the advisory lock (GET_LOCK on MariaDB) and half on the lease,
    released at once with a slow data migration first: exactly one of them migrates, the row
    exists once, every replica exits 0. The control (no look at the other kind) shows two
    leaders."""
    def herd(url: URL, control: str) -> tuple[list[dict[str, Any]], set[int]]:
        prepare(url)
        procs = [start(url, "advisory" if i % 2 else "table", control=control,
                       HERD_TEST_SLOW="2") for i in range(8)]
        with reaped(*procs):
            go(*procs)
            results = [report(p) for p in procs]
        return results, {pid for _, _, pid in attempts(url)}

    with fresh_database(dialect, request, tmp_path) as url:
        results, leaders = herd(url, "")
        assert len(leaders) == 1, results
        assert [r["exit_code"] for r in results] == [0] * 8, results
        assert [r["action"] for r in results].count("migrated") == 1, results
        assert (seeded(url), versions(url)) == (1, ["f2"])

    with fresh_database(dialect, request, tmp_path) as url:  # the control
        _, leaders = herd(url, "no-rivals")
        assert len(leaders) >= 2, "without the check both kinds should elect a leader"


def test_a_lock_has_the_other_kinds_of_its_dialect_as_rivals_never_its_own(db: URL) -> None:
    """create_lock() gives each lock every other kind of its dialect as a rival, never its
    own kind (a lock that saw itself would back off from itself), and while one kind is
    held acquire() of the other backs off until it is free."""
    engine = create_engine(db)  # herd's own: autocommit, as the runner's
    try:
        with engine.connect() as one, engine.connect() as two:
            key = LockKey("herd:rivals")
            kinds = {choose("auto", one.dialect.name), "table"}
            for kind in kinds:
                lock = create_lock(kind, one, key)
                assert {r.kind for r in lock.rivals} == kinds - {kind}
            first, second = (create_lock(k, c, key) for k, c in zip(sorted(kinds), (one, two),
                                                                      strict=True))
            with first.acquire(Deadline(0)) as held:
                assert held
                with pytest.raises(LockTimeoutError) as busy, second.acquire(Deadline(0.3)):
                    pass
                assert busy.value.holder is not None
            with second.acquire(Deadline(0)) as held:
                assert held
    finally:
        engine.dispose()


def test_the_fence_runs_beside_env_pys_own_version_callbacks(
        db: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the lease, env.py's own on_version_apply callbacks still run once per revision
    beside herd's check, and a leader that holds its lease passes that check on every
    backend (SQLite: without FOR UPDATE)."""
    import alembic_herd

    prepare(db)
    note = tmp_path / "note"
    monkeypatch.setenv("HERD_TEST_NOTE", str(note))
    outcome = alembic_herd.upgrade(CONFIG, url=render(db), lock="table", lock_timeout=30)
    assert outcome.action == "migrated" and outcome.revisions == ("f1", "f2")
    assert note.read_text().split() == ["f1", "f2"]
    assert (seeded(db), versions(db)) == (1, ["f2"])


def test_unlock_of_one_kind_names_the_other_kinds_holder(pg: URL) -> None:
    """`herd unlock --lock table` while a replica on the advisory lock holds it: refused with
    LockHeldError naming the advisory lock and telling which unlock to run; nothing broken."""
    import alembic_herd

    engine = create_engine(pg)
    try:
        with engine.connect() as conn:
            advisory = create_lock("advisory", conn,
                                   LockKey.for_version_table("alembic_version", None, None))
            with advisory.acquire(Deadline(0)) as held:
                assert held
                with pytest.raises(LockHeldError) as refused:
                    alembic_herd.unlock(CONFIG, url=render(pg), lock="table", force=True)
                assert "(postgresql advisory) is held by" in str(refused.value)
                assert "'herd unlock --lock advisory'" in str(refused.value)
                advisory.verify()
    finally:
        engine.dispose()


# `herd downgrade base` through the library (the CLI has no --lease-ttl), its error as the
# CLI's one line; "no-fence" switches the lease's fence off for the control.
DOWNGRADE = """
import sys
import alembic_herd
from alembic_herd.locks import Lock
from alembic_herd.locks.lease import LeaseLock
control, config, url = sys.argv[1:4]
if control == "no-fence":
    LeaseLock.fence = Lock.fence
try:
    alembic_herd.downgrade(config, "base", url=url, lock="table", lease_ttl=2,
                           lock_timeout=30, yes=True)
except alembic_herd.HerdError as exc:
    print(f"herd: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def paused_downgrade(url: URL, tmp_path: Path, control: str) -> dict[str, Any]:
    """`herd downgrade base --lock table` paused inside f1's downgrade (its row deleted, not
    committed; f2 already undone) past its 2 s lease; this test takes the lease over and
    holds it; the downgrade resumes. Its exit, stderr and the database afterwards."""
    import alembic_herd

    alembic_herd.upgrade(CONFIG, url=render(url), lock="table", lock_timeout=30)
    mark = tmp_path / f"down{control}"
    proc = subprocess.Popen(
        [sys.executable, "-c", DOWNGRADE, control or "fenced", CONFIG, render(url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HERD_TEST_MARK": str(mark), "HERD_TEST_TPM": "1"})
    with reaped(proc):
        deadline = time.monotonic() + SAFETY
        while not (mark.exists() and ("f1", "reverting", proc.pid) in attempts(url)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)  # inside f1's downgrade: its row deleted
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                taker = create_lock("table", conn,
                                    LockKey.for_version_table("alembic_version", None, None))
                with taker.acquire(Deadline(SAFETY)) as held:  # once the lease expired
                    assert held and stopped(proc.pid)
                    Path(f"{mark}.go").touch()
                    os.kill(proc.pid, signal.SIGCONT)
                    _, err = proc.communicate(timeout=SAFETY)
        finally:
            engine.dispose()
    return {"code": proc.returncode, "err": err, "seeded": seeded(url),
            "versions": versions(url), "attempts": attempts(url)}


def test_a_downgrade_paused_past_its_lease_commits_nothing_and_exits_11(
        pg: URL, tmp_path: Path) -> None:
    """`herd downgrade` with `--lock table`, SIGSTOPped inside a data revision's downgrade
    past its lease while another process takes the lease: when it resumes the database
    refuses its commit (the row it deleted is back, f1 still in the version table), it
    exits 11 with one line, and the attempt log says f2 'reverted', f1 'interrupted'. The
    control (no fence) commits the stale downgrade."""
    prepare(pg)
    run = paused_downgrade(pg, tmp_path, "")
    assert run["code"] == LockLostError.exit_code, run["err"][-2000:]
    errors = [x for x in run["err"].splitlines() if x.startswith("herd: error:")]
    assert len(errors) == 1 and "lease" in errors[0], run["err"][-2000:]
    assert (run["seeded"], run["versions"]) == (1, ["f1"]), run
    assert [(rev, status) for rev, status, _ in run["attempts"]
            if status in ("reverted", "interrupted", "reverting", "failed")] == [
        ("f2", "reverted"), ("f1", "interrupted")], run["attempts"]


def test_control_a_downgrade_without_the_fence_commits_after_losing_its_lease(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The control of the test above: with the lease's fence switched off, the resumed
    downgrade commits f1's undo although the lease is someone else's."""
    with fresh_database("postgresql", request, tmp_path) as url:
        prepare(url)
        run = paused_downgrade(url, tmp_path, "no-fence")
        assert (run["seeded"], run["versions"]) == (0, []), run
