"""What herd's bookkeeping costs in statements, counted, never timed: per revision a constant
beside Alembic's own statements, and a bounded number for one replica on a fresh database.
And the attempt log stays true while doing less: with one transaction for all revisions no
row says ``applied`` before that transaction committed.

Statements are counted with a ``before_cursor_execute`` listener on every engine of this
process, in the thread that migrates (the lock-wait blocker watch runs in a thread of its
own, and what it sends depends on how long the migration takes), and without
``pg_notify`` (at most one a second, by design: it grows with time, not with revisions).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Engine

import alembic_herd
import alembic_herd._defaults
from conftest import make_database, render
from test_failures import SLOW, eventually, history, replica, started, versions

ENV_PY = '''\
import os
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
TPM = os.environ.get("HERD_TEST_TPM") == "1"


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      transaction_per_migration=TPM)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=TPM)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''


def chain(folder: Path, count: int) -> str:
    """An Alembic project of ``count`` linear revisions, each creating one table; returns
    its alembic.ini."""
    versions_dir = folder / "migrations" / "versions"
    versions_dir.mkdir(parents=True)
    (folder / "migrations" / "env.py").write_text(ENV_PY)
    previous = None
    for i in range(1, count + 1):
        rev = f"r{i:04d}"
        (versions_dir / f"{rev}.py").write_text(
            f'"""create t{i:04d}"""\n'
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {rev!r}\ndown_revision = {previous!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n"
            f"    op.create_table('t{i:04d}', sa.Column('id', sa.Integer, primary_key=True))\n")
        previous = rev
    ini = folder / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url =\n")
    return str(ini)


class Statements:
    """The statements this thread sends on any engine while counting, ``pg_notify`` aside."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.thread = threading.get_ident()

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == self.thread and "pg_notify" not in statement:
            self.seen.append(" ".join(statement.split()))


@pytest.fixture
def statements() -> Iterator[Statements]:
    counter = Statements()
    sa.event.listen(Engine, "before_cursor_execute", counter)
    yield counter
    sa.event.remove(Engine, "before_cursor_execute", counter)


def _count(tool: str, ini: str, url: URL, counter: Statements) -> int:
    counter.seen.clear()
    if tool == "herd":
        outcome = alembic_herd.upgrade(ini, url=url)
        assert outcome.action == "migrated"
    else:
        cfg = Config(ini)
        cfg.set_main_option("sqlalchemy.url", render(url).replace("%", "%%"))
        command.upgrade(cfg, "head")
    return len(counter.seen)


SMALL, LARGE = 10, 30

# herd's statements per revision beyond Alembic's own (its DDL and its version-table write):
# none on PostgreSQL and MySQL/MariaDB (the attempt's rows are written before its first
# revision and its outcome in one statement after the last, History.plan; the lock is
# confirmed between revisions by looking at its session's socket, with a round trip only
# every LOCK_CONFIRM_EVERY seconds, made longer than this test here); SQLite one (one
# writer at a time: each revision's 'applied' row is inserted in its own transaction on the
# migration's connection, so that a leader killed after it committed leaves the log
# agreeing with the version table). Before History.plan: PostgreSQL 1, MySQL/MariaDB 2.
PER_REVISION = {"postgresql": 0, "mysql": 0, "sqlite": 1}

CASES = [
    pytest.param("postgresql", False, id="postgresql-one-transaction"),
    pytest.param("postgresql", True, id="postgresql-transaction-per-migration"),
    pytest.param("mysql", True, id="mysql"),  # DDL commits by itself: always per migration
    pytest.param("sqlite", False, id="sqlite-one-transaction"),
]


@pytest.mark.parametrize(("backend", "tpm"), CASES)
def test_herds_statements_per_revision_are_a_small_constant(
        backend: str, tpm: bool, statements: Statements, request: pytest.FixtureRequest,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Going from SMALL to LARGE revisions adds, per revision, Alembic's own statements
    plus PER_REVISION of herd's: nothing of herd's grows with the revisions done so far."""
    monkeypatch.setenv("HERD_TEST_TPM", "1" if tpm else "0")
    monkeypatch.setattr(alembic_herd._defaults, "LOCK_CONFIRM_EVERY", 3600.0)
    counts: dict[tuple[str, int], int] = {}
    for size in (SMALL, LARGE):
        ini = chain(tmp_path / f"chain{size}", size)
        for tool in ("alembic", "herd"):
            work = tmp_path / f"{tool}{size}"
            work.mkdir()
            for url in make_database(backend, request, work):
                counts[tool, size] = _count(tool, ini, url, statements)
    extra = {tool: counts[tool, LARGE] - counts[tool, SMALL] for tool in ("alembic", "herd")}
    added = LARGE - SMALL
    assert extra["alembic"] == 2 * added, counts  # its CREATE TABLE and version write each
    assert extra["herd"] - extra["alembic"] == PER_REVISION[backend] * added, counts


# One replica on a fresh database, a one-revision project: every statement herd sends.
# What they are (PostgreSQL): where env.py keeps the version table (one read-mode run of
# env.py, and herd's own connection; MySQL/MariaDB: herd's connection is in the database
# its URL names, no statement), the heads and the attempt log's baseline (a missing table
# is told by the read's own error, no catalog query after it), the lock (the try-lock with
# the pooler check in one statement, then its claim, which also reads what the leader asks
# next under the lock: whether the rival lease's table and the attempt log exist, the right
# to create herd's tables, the server's identity; no LISTEN: only a replica that has to
# wait listens), the heads again under the lock, Alembic's own five, the migration session
# (lock timeout, keepalives, where its version table is and its server's identity in one
# statement; MySQL/MariaDB: its SET and one SELECT), the lock check before the revision,
# herd's two tables created in one statement (MySQL/MariaDB: one each, the index inside),
# the graph, the row (written after the revision ran, carrying the lock check that follows
# it; written 'applied' where the revision committed on its own), the final update (one
# transaction: after the commit), the heads, the unlock. Issue 17's goal: at most 20.
FRESH_BOUND = {"postgresql": 20, "mysql": 20, "sqlite": 20}


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_one_replica_on_a_fresh_database_sends_a_bounded_number_of_statements(
        backend: str, statements: Statements, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    ini = chain(tmp_path / "one", 1)
    counts = {}
    for tool in ("alembic", "herd"):
        work = tmp_path / tool
        work.mkdir()
        for url in make_database(backend, request, work):
            counts[tool] = _count(tool, ini, url, statements)
            if tool == "herd":
                sent = list(statements.seen)
    assert counts["herd"] <= FRESH_BOUND[backend], "\n".join(sent)


@pytest.mark.parametrize("kill", [False, True], ids=["running", "killed"])
def test_one_transaction_rows_say_applied_only_after_the_commit(pg: URL, kill: bool) -> None:
    """One transaction for all revisions (PostgreSQL): while s2 runs, s1 has run but nothing
    has committed, so no row says 'applied': every row of the attempt says 'running'
    (written before the first revision started, History.plan). Killed there, the next
    leader records the attempt 'interrupted' on its first row, drops the rows of the
    revisions after it (which one was running is not recorded: nothing of it committed),
    and migrates."""
    with replica("herd", SLOW, pg, HERD_TEST_SLOW="60", HERD_TEST_TPM="0") as leader:
        eventually(lambda: started(leader, "s2"), "the leader to start s2", leader)
        assert versions(pg) is None  # nothing committed: not even the version table
        assert [(r["revision"], r["status"]) for r in history(pg)] == [
            ("s1", "running"), ("s2", "running"), ("s3", "running")]
        if not kill:
            return
        leader.send_signal(signal.SIGKILL)
        leader.wait()
    outcome = alembic_herd.upgrade(SLOW, url=pg)
    assert outcome.action == "migrated" and versions(pg) == ["s3"]
    rows = [(r["revision"], r["status"]) for r in history(pg)]
    assert rows == [("s1", "interrupted"),
                    ("s1", "applied"), ("s2", "applied"), ("s3", "applied")]


@pytest.mark.parametrize("control", [False, True], ids=["checked", "control-no-check"])
def test_the_only_revisions_transaction_commits_after_a_lock_check(
        pg: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control: bool) -> None:
    """One transaction for all revisions (PostgreSQL), fresh database, one revision: the
    lock check that follows the last revision (the fence: a lost lock rolls the whole
    transaction back) rides on the first attempt-log row's insert, which herd writes only
    once that revision ran (no footprint before it). Whatever carries it, some statement on
    herd's lock session checks the lock after the version table's update and before the
    migration's commit. The control switches the lock's checks off and finds none there."""
    from alembic_herd.locks.postgresql import AdvisoryLock

    monkeypatch.setenv("HERD_TEST_TPM", "0")
    if control:
        monkeypatch.setattr(AdvisoryLock, "probe", ())
        monkeypatch.setattr(AdvisoryLock, "verify", lambda self: None)
    ini = chain(tmp_path / "one", 1)
    seen: list[tuple[int, str]] = []

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((id(conn), " ".join(statement.split())))

    def committed(conn: Any) -> None:
        seen.append((id(conn), "COMMIT"))

    sa.event.listen(Engine, "before_cursor_execute", executed)
    sa.event.listen(Engine, "commit", committed)
    try:
        outcome = alembic_herd.upgrade(ini, url=pg)
    finally:
        sa.event.remove(Engine, "before_cursor_execute", executed)
        sa.event.remove(Engine, "commit", committed)
    assert outcome.action == "migrated"
    stamp = next(i for i, (_, s) in enumerate(seen)
                 if s.startswith("INSERT INTO alembic_version"))
    migration = seen[stamp][0]
    commit = next(i for i, (c, s) in enumerate(seen) if i > stamp and c == migration
                  and s == "COMMIT")
    checks = [s for c, s in seen[stamp:commit]  # the lock's probe: its session's identity
              if c != migration and "pg_backend_pid()" in s and "current_setting(" in s]
    assert bool(checks) != control, seen[stamp:commit]
