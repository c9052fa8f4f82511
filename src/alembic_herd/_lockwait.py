"""Lock waits of the migration's own statements: never stall the application behind them.

An ``ALTER TABLE`` waits for an exclusive lock on its table; while it waits, every
application query on that table queues behind it. So herd gives each statement of a
migration a short lock-wait budget (:func:`Guard.attach`: PostgreSQL ``lock_timeout``,
MySQL/MariaDB ``lock_wait_timeout`` and ``innodb_lock_wait_timeout``), and when a revision
times out waiting, the leader rolls it back and tries again later with a longer budget
(:class:`Retries`, in the spirit of GitLab's ``with_lock_retries``), within a total budget.

Only a revision whose work rolled back completely is tried again: :class:`Guard` watches the
migration session's statements, and a revision that already committed something (an
autocommit block, MySQL's non-transactional DDL) stops with a clear error instead. While a
revision runs, a thread on its own connection notes who blocks the migration session
(:class:`_Watch`), so that each timeout names its blocker in the log, the attempt log, the
waiters' lines and ``herd status``.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import _defaults as defaults
from ._database import SERVER_KEEPALIVES, error_code, mask_text
from ._durations import format_seconds
from ._waitnotes import blocked_by, note, retrying

__all__ = ["Guard", "Policy", "Retries", "blocked_by", "note", "retrying"]

log = logging.getLogger("alembic_herd")

_LOCK_TIMEOUT_CODES = {"55P03", 1205}
"""PostgreSQL lock_not_available (lock_timeout, NOWAIT); MySQL/MariaDB
ER_LOCK_WAIT_TIMEOUT (row locks and metadata locks alike)."""

_READS = re.compile(r"\s*(SELECT|SHOW|SET|EXPLAIN|DESCRIBE|DESC|PRAGMA)\b", re.IGNORECASE)
"""Statements that change nothing a rollback would have to undo."""



def is_lock_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement that gave up waiting for a lock."""
    return isinstance(exc, DBAPIError) and error_code(exc) in _LOCK_TIMEOUT_CODES


@dataclass(frozen=True)
class Policy:
    """The lock-wait budget of a migration's statements and how often to try again."""

    timeout: float = defaults.LOCK_WAIT_TIMEOUT
    attempts: int = defaults.LOCK_WAIT_ATTEMPTS
    budget: float = defaults.LOCK_WAIT_BUDGET
    statement_timeout: float = defaults.STATEMENT_TIMEOUT

    @property
    def on(self) -> bool:
        return self.timeout > 0

    def timeout_of(self, attempt: int) -> float:
        """Attempt ``attempt``'s (from 1) lock wait: growing, up to a ceiling."""
        grown = self.timeout * defaults.LOCK_WAIT_GROWTH ** (attempt - 1)
        return min(grown, self.timeout * defaults.LOCK_WAIT_CEILING)

    @staticmethod
    def pause_after(attempt: int) -> float:
        base = min(defaults.LOCK_WAIT_PAUSE * 2.0 ** (attempt - 1), defaults.LOCK_WAIT_PAUSE_CAP)
        return base * random.uniform(0.75, 1.0)


class Retries:
    """One leader's way through the schedule."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.attempt = 1
        self.began = time.monotonic()

    @property
    def timeout(self) -> float:
        return self.policy.timeout_of(self.attempt)

    def next(self) -> float | None:
        """The pause before the next attempt (and move to it), or ``None`` when the attempts
        or the budget are spent."""
        pause = self.policy.pause_after(self.attempt)
        spent = time.monotonic() - self.began
        if self.attempt >= self.policy.attempts or spent + pause >= self.policy.budget:
            return None
        self.attempt += 1
        return pause

    def spent(self) -> float:
        return time.monotonic() - self.began


# -- the migration session ---------------------------------------------------------------


class Guard:
    """One run of env.py under the policy: the migration session's settings, whether the
    revision in progress has committed anything, and who blocks it."""

    def __init__(self, policy: Policy, timeout: float, engine: Engine, url: URL) -> None:
        self.policy = policy
        self.timeout = timeout
        self.url = url
        self.conn: Connection | None = None
        self.transactional = True
        self.uncommitted: str | None = None
        """The revision's first write not committed yet."""
        self.committed: str | None = None
        """The revision's first write that a rollback cannot undo."""
        self.since: float | None = None
        """When the statement in flight on the migration session started (``None``: none)."""
        self._watch = _Watch(engine, url, lambda: self.since)

    def attach(self, context: MigrationContext, also: Sequence[str] = (),
               params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """Set the migration session's timeouts and start watching it. ``also``: more
        columns (PostgreSQL ``set_config`` calls, facts about the session; ``params`` their
        bind values) for the same statement; their values, or ``None`` when nothing was
        sent (then the caller asks)."""
        conn = context.connection
        if not self.policy.on or conn is None:
            return None
        configured = _configure(conn, self.policy, self.timeout, also, params)
        if configured is None:  # SQLite: no lock waits to bound
            return None
        pid, values = configured
        self.conn = conn
        self.transactional = bool(context.impl.transactional_ddl)
        sa.event.listen(conn, "before_cursor_execute", self._executing)
        sa.event.listen(conn, "after_cursor_execute", self._executed)
        sa.event.listen(conn, "commit", self._commit)
        self._watch.start(conn.dialect.name, pid)
        return values

    def revision_starts(self, *, own_transaction: bool) -> None:
        """A revision begins. Earlier revisions' writes are theirs (committed with their
        version stamp); in one transaction for all, what an autocommit block of an earlier
        revision committed stays on record, for that revision's stamp may still roll back."""
        self.uncommitted = None
        if own_transaction:
            self.committed = None

    def blocker(self) -> str | None:
        return self._watch.latest

    def close(self) -> None:
        self._watch.stop()
        if self.conn is not None:
            sa.event.remove(self.conn, "before_cursor_execute", self._executing)
            sa.event.remove(self.conn, "after_cursor_execute", self._executed)
            sa.event.remove(self.conn, "commit", self._commit)
            self.conn = None

    def _executing(self, *_: Any) -> None:  # before_cursor_execute
        self.since = time.monotonic()

    def _executed(self, conn: Connection, *event: Any) -> None:  # after_cursor_execute
        self.since = None
        statement: str = event[1]
        if _READS.match(statement):
            return
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        if autocommit or not self.transactional:
            self.committed = self.committed or statement
        else:
            self.uncommitted = self.uncommitted or statement

    def _commit(self, conn: Connection) -> None:
        if self.uncommitted:
            self.committed = self.committed or self.uncommitted


def _configure(conn: Connection, policy: Policy, timeout: float, also: Sequence[str] = (),
               params: dict[str, Any] | None = None) -> tuple[int, tuple[Any, ...]] | None:
    """Give the session ``timeout`` seconds of lock wait per statement (and the statement
    timeout); return its server-side id, for :class:`_Watch`, and the values of ``also``,
    read by the same statement that returns the id."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        settings = [("lock_timeout", timeout)]
        if policy.statement_timeout > 0:
            settings.append(("statement_timeout", policy.statement_timeout))
        calls = ", ".join(["pg_backend_pid()"] + [
            f"set_config('{name}', '{math.ceil(value * 1000)}ms', false)"
            for name, value in settings] + list(also))
        row = conn.execute(sa.text(f"SELECT {calls}"), params or {}).one()
        return int(row[0]), tuple(row[1 + len(settings):])
    if dialect in ("mysql", "mariadb"):
        whole = max(1, math.ceil(timeout))
        sets = f"SET SESSION lock_wait_timeout = {whole}, innodb_lock_wait_timeout = {whole}"
        if policy.statement_timeout > 0 and getattr(conn.dialect, "is_mariadb", False):
            sets += f", max_statement_time = {policy.statement_timeout:.3f}"
        elif policy.statement_timeout > 0:
            log.warning("MySQL has no statement timeout for DDL; --statement-timeout ignored")
        conn.execute(sa.text(sets))
        row = conn.execute(sa.text(", ".join(["SELECT CONNECTION_ID()", *also])),
                           params or {}).one()
        return int(row[0]), tuple(row[1:])
    return None


# -- who blocks the migration session ----------------------------------------------------

_PG_BLOCKERS = sa.text(
    "SELECT pid, usename, application_name, state,"
    " extract(epoch from now() - xact_start), left(query, 100)"
    " FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(:pid)) ORDER BY xact_start")

_MY_WAITING = sa.text(
    "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = :pid")

# MariaDB without the metadata_lock_info plugin (and MySQL without performance_schema)
# cannot say who holds a metadata lock: the sessions with an open transaction, oldest
# first, are who can; those whose current database is the migrated one first (the others,
# on other databases of the server, can block it only through a qualified name).
_MY_BLOCKERS = sa.text(
    "SELECT p.ID, p.USER, p.HOST, p.COMMAND,"
    " TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1e6, LEFT(t.trx_query, 100)"
    " FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p"
    " ON p.ID = t.trx_mysql_thread_id WHERE p.ID <> :pid"
    " ORDER BY p.DB <=> DATABASE() DESC, t.trx_started LIMIT 3")


def _describe(rows: Sequence[Sequence[Any]], url: URL) -> str | None:
    parts = []
    for pid, user, where, state, age, query in rows:
        what = [f"user {user}"]
        if where:
            what.append(repr(str(where)))
        if state:
            what.append(str(state).lower() if str(state) != "Sleep" else "idle in transaction")
        if age is not None:
            what.append(f"transaction open {format_seconds(float(age))}")
        text = ", ".join(what)
        if query:
            text += ": " + " ".join(str(query).split())
        parts.append(f"pid {pid} ({text})")
    return mask_text("; ".join(parts), url) if parts else None


def read_blockers(conn: Connection, dialect: str, pid: int, url: URL) -> str | None:
    """Who blocks session ``pid`` right now, described in one line (``None``: nobody)."""
    if dialect == "postgresql":
        return _describe(conn.execute(_PG_BLOCKERS, {"pid": pid}).all(), url)
    state = conn.execute(_MY_WAITING, {"pid": pid}).scalar()
    if not state or "lock" not in str(state).lower():
        return None
    return _describe(conn.execute(_MY_BLOCKERS, {"pid": pid}).all(), url)


class _Watch:
    """A thread that notes, every :data:`BLOCKER_POLL` seconds while a statement of the
    migration session has been running for half that, who blocks it (once a lock wait has
    timed out the server no longer says), on a connection of its own opened the first time
    it has to look: a migration of quick statements costs no connection and no query."""

    def __init__(self, engine: Engine, url: URL, since: Callable[[], float | None]) -> None:
        self.engine = engine
        self.url = url
        self.since = since
        self.latest: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, dialect: str, pid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(dialect, pid),
                                        name="herd-blockers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # not for long: connecting may hang on a lost server
            self._thread.join(timeout=4 * defaults.BLOCKER_POLL)

    def _slow(self) -> bool:
        """A statement of the migration session has run for half of BLOCKER_POLL."""
        since = self.since()
        return since is not None and time.monotonic() - since >= defaults.BLOCKER_POLL / 2

    def _run(self, dialect: str, pid: int) -> None:
        while not self._slow():  # a migration of quick statements needs no connection
            if self._stop.wait(defaults.BLOCKER_POLL / 5):  # (a look costs no round trip)
                return
        try:
            with self.engine.connect() as conn:
                if dialect == "postgresql":  # like the lock and migration sessions: the server
                    conn.execute(_SERVER_KEEPALIVES)  # drops it when the leader is cut off
                while not self._stop.is_set():
                    if self._slow():
                        seen = read_blockers(conn, dialect, pid, self.url)
                        if seen:
                            self.latest = seen
                    self._stop.wait(defaults.BLOCKER_POLL)
        except SQLAlchemyError as exc:  # a view this user may not read: degrade, never fail
            log.debug("cannot read who blocks the migration session: %s", exc)


_SERVER_KEEPALIVES = sa.text(f"SELECT {SERVER_KEEPALIVES}")


# -- CREATE INDEX CONCURRENTLY -----------------------------------------------------------

_INVALID_INDEXES = sa.text(
    "SELECT c.relname, c.oid::regclass::text FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%'")


def drop_invalid_indexes(conn: Connection, sources: Sequence[str], timeout: float) -> list[str]:
    """Drop the INVALID indexes (PostgreSQL) whose name one of ``sources`` (the revision
    files of attempts that did not apply) spells: what a ``CREATE INDEX CONCURRENTLY`` that
    failed or was cut off left behind, which would make building it again fail ('already
    exists'). Run on herd's autocommit connection, under the migration lock (no herd
    migration builds one meanwhile), waiting at most ``timeout`` for locks; a lock wait
    timeout propagates. Returns the dropped names."""
    dropped = []
    for name, qualified in conn.execute(_INVALID_INDEXES).all():
        spelt = re.compile(rf"(?<![\w$]){re.escape(str(name))}(?![\w$])")
        if not any(spelt.search(source) for source in sources):
            continue
        conn.execute(sa.text(f"SET lock_timeout = '{math.ceil(timeout * 1000)}ms'"))
        try:
            conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
        finally:
            conn.execute(sa.text("RESET lock_timeout"))
        dropped.append(str(qualified))
    return dropped
