"""The attempt log (``herd_history``) on every backend, and what it costs the leader.

herd's bookkeeping between two revisions is one lock check and one write on PostgreSQL
(the previous revision's ``applied`` and the next one's ``running`` row in one statement),
a check and two writes on MySQL/MariaDB, and nothing until the end on SQLite (rows are
buffered, then written a few per statement). The counts are asserted here, statement by
statement, so a change that adds round trips per revision fails a test rather than only
a benchmark.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

import alembic_herd
import alembic_herd._defaults
import alembic_herd._log
from alembic_herd._database import create_engine
from alembic_herd._history import History
from conftest import PROJECTS

HERDSET = str(PROJECTS / "herdset" / "alembic.ini")
REVISIONS = 4  # in herdset


def _rows(url: URL) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT id, attempt, revision, status, finished IS NOT NULL, success "
                "FROM herd_history ORDER BY id"))]
    finally:
        engine.dispose()


@contextmanager
def attempt_log(url: URL) -> Iterator[History]:
    """herd's attempt log on a connection of herd's own (buffered on SQLite, as the leader
    keeps it); what is buffered is written on the way out."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            history = History(conn, "scope", deferred=url.get_backend_name() == "sqlite")
            history.ensure()
            yield history
            history.flush()
    finally:
        engine.dispose()


def test_advance_records_the_previous_revision_and_starts_the_next(db: URL) -> None:
    """start -> advance -> advance -> finish leaves one row per revision, each applied and
    finished, with the ids the rows were given (later updates find their row)."""
    with attempt_log(db) as history:
        first = history.start("a1", "r1")
        second = history.advance(first, "a1", "r2")
        third = history.advance(second, "a1", "r3")
        history.finish(third, "applied")
    assert _rows(db) == [(i + 1, "a1", rev, "applied", True, True)
                         for i, rev in enumerate(["r1", "r2", "r3"])]
    if db.get_backend_name() != "sqlite":  # deferred rows get their ids when written
        assert [first.id, second.id, third.id] == [1, 2, 3]


def test_a_failure_after_advance_updates_the_running_row(db: URL) -> None:
    """The row started by advance() is the one a failure then marks (a lost id would leave
    it 'running', and the next leader would take it for a dead leader's)."""
    with attempt_log(db) as history:
        first = history.start("a1", "r1")
        second = history.advance(first, "a1", "r2")
        history.finish(second, "failed", "boom")
    assert [row[2:4] for row in _rows(db)] == [("r1", "applied"), ("r2", "failed")]


def test_deferred_rows_are_written_in_chunks(tmp_path: Any) -> None:
    """SQLite: 200 buffered rows go in a few multi-row statements (one commit, one file sync
    each), within SQLite's 999-parameter bound."""
    url = sa.engine.make_url(f"sqlite:///{tmp_path / 'h.db'}")
    engine = create_engine(url)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    with engine.connect() as conn:
        history = History(conn, "scope", deferred=True)
        history.ensure()
        row = history.start("a1", "r000")
        for i in range(1, 200):
            row = history.advance(row, "a1", f"r{i:03d}")
        history.finish(row, "applied")
        statements.clear()
        history.flush()
    engine.dispose()
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3  # 83 + 83 + 34 rows
    rows = _rows(url)
    assert len(rows) == 200 and {r[3] for r in rows} == {"applied"}
    assert [r[2] for r in rows] == [f"r{i:03d}" for i in range(200)]


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement any engine in this process sends, in order."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(Engine, "before_cursor_execute", record)


def _kind(statement: str) -> str | None:
    text = " ".join(statement.split()).lower()
    if "herd_history" in text and text.startswith(("insert", "with", "update")):
        return "history write"  # first: on MySQL/MariaDB a write may carry the lock check
    if "current_setting('application_name')" in text or "is_used_lock" in text:
        return "verify"
    return None


@pytest.mark.parametrize("tpm", [False, True], ids=["one-transaction", "per-migration"])
def test_the_leader_writes_the_attempt_log_a_fixed_number_of_times(
        db: URL, statements: list[str], tpm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attempt log costs no write per revision (History.plan): on this fresh database
    herd's tables appear only after the first revision (no footprint before it), and then
    every row of the attempt goes in at once (one statement for all but the last, whose
    insert carries the lock check), and the outcome of all of them goes in one statement
    at the end. The lock is checked before the first revision and before the last write;
    between revisions its session's socket is looked at, and a round trip is paid only every
    LOCK_CONFIRM_EVERY seconds (here: never). No row is written twice. SQLite, one writer at
    a time, still writes each revision's row as it lands. (Before History.plan: PostgreSQL 5
    writes, MariaDB 7, one more per revision.)"""
    monkeypatch.setenv("HERD_TEST_TPM", "1" if tpm else "0")
    monkeypatch.setattr(alembic_herd._defaults, "LOCK_CONFIRM_EVERY", 3600.0)
    outcome = alembic_herd.upgrade(HERDSET, url=db)
    assert outcome.action == "migrated" and len(outcome.revisions) == REVISIONS
    counts = Counter(kind for s in statements if (kind := _kind(s)))
    if db.get_backend_name() == "sqlite":  # the flock check is a stat(). Alembic commits
        # each SQLite revision on its own (DDL not transactional there, whatever
        # HERD_TEST_TPM says): the first row is inserted after its commit, with herd's
        # tables, each later one inside its revision's transaction on the migration's
        # connection, and nothing at the end
        assert counts == {"history write": REVISIONS}
    else:
        assert counts == {"verify": 2, "history write": 3}
    rows = _rows(db)
    assert {r[3] for r in rows} == {"applied"} and len(rows) == REVISIONS
    engine = sa.create_engine(db)
    with engine.connect() as conn:  # each row has its own revision's start, not the plan's
        starts = conn.execute(sa.text("SELECT COUNT(DISTINCT started) FROM herd_history"))
        assert starts.scalar() == REVISIONS
    engine.dispose()


def test_a_lock_due_for_confirmation_is_verified_before_every_revision(
        db: URL, statements: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of the test above: with LOCK_CONFIRM_EVERY at 0 the leader verifies its
    lock before every revision (and before its last write), so the statements counted
    there are saved by the confirmation's interval, not lost checks."""
    monkeypatch.setattr(alembic_herd._defaults, "LOCK_CONFIRM_EVERY", 0.0)
    outcome = alembic_herd.upgrade(HERDSET, url=db)
    assert outcome.action == "migrated"
    counts = Counter(kind for s in statements if (kind := _kind(s)))
    # before every revision and before the last write; SQLite's file lock is checked by a
    # stat(), not a statement
    assert counts["verify"] == (0 if db.get_backend_name() == "sqlite" else REVISIONS + 1)


def test_a_process_forked_after_import_names_itself(tmp_path: Any) -> None:
    """gunicorn --preload and Celery's prefork pool import herd, then fork: each child's
    attempt rows, lock file and log lines must carry its own pid, not the parent's."""
    url = sa.engine.make_url(f"sqlite:///{tmp_path / 'forked.db'}")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            outcome = alembic_herd.upgrade(HERDSET, url=url)
            os.write(write, json.dumps({"replica": outcome.replica,
                                        "log": alembic_herd._log.replica()}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["replica"].endswith(f":{child}") and report["log"].endswith(f":{child}")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        pids = {row[0] for row in conn.execute(sa.text("SELECT pid FROM herd_history"))}
    engine.dispose()
    assert pids == {child} != {os.getpid()}


@pytest.mark.parametrize("held", [True, False], ids=["held", "lost-control"])
def test_a_mysql_attempt_log_write_carrying_the_lock_check_writes_nothing_without_the_lock(
        request: pytest.FixtureRequest, tmp_path: Any, held: bool) -> None:
    """MariaDB/MySQL: between two revisions the previous row's update carries the GET_LOCK
    check in its WHERE (no check of its own). With the lock released on its session the
    update matches nothing, the next row is not inserted and `guarded` says so (the leader
    then verifies and stops); with the lock held both are written."""
    from alembic_herd.locks import LockKey
    from alembic_herd.locks.mysql import GetLock
    from conftest import make_database

    for url in make_database("mysql", request, tmp_path):
        engine = create_engine(url)
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            lock = GetLock(conn, LockKey(f"wtbookkeep_guard_{tmp_path.name}"))
            assert lock.try_acquire()
            history = History(conn, "alembic_version")
            history.ensure()
            first = history.start("a1", "r1")
            if not held:
                lock.release()
            history.advance(first, "a1", "r2", guard=lock.guard)
            assert history.guarded is held
            statuses = [r.status for r in history.of_attempt("a1")]
            assert statuses == (["applied", "running"] if held else ["running"]), statuses
            lock.release()
        engine.dispose()
