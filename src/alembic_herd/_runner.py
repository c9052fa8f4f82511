"""check -> elect -> migrate -> release; waiters watch the heads.

1. Read the database's heads on herd's own autocommit connection. Nothing pending: return
   without taking any lock (every ordinary restart).
2. Otherwise poll a non-blocking try-lock with jittered exponential backoff, under one
   deadline. Between tries, re-read the heads: a waiter that sees another replica bring the
   database current returns without ever taking the lock.
3. The process that gets the lock re-checks the heads (someone may have just finished),
   checks the attempt log for a failure of a leader it waited for (then it reports *that*
   failure instead of repeating it) and for revisions a dead leader left half-applied, then
   runs Alembic's upgrade in-process. Before each revision it verifies that it still holds
   the lock (fencing), and logs each revision's start and end in the attempt log.
4. Release. The database server releases session locks by itself if the process dies.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import _defaults as defaults
from ._database import (
    create_engine,
    display,
    driver_message,
    is_transient,
    parse_url,
    unavailable,
)
from ._durations import Deadline, format_seconds
from ._environment import Environment
from ._heads import read_heads
from ._history import History
from ._leader import Leading, _leader_failed
from ._log import event, log, replica
from ._outcome import Outcome, Status
from ._polling import connect, poll
from .errors import (
    DatabaseAheadError,
    DatabaseUnavailableError,
    Holder,
    LockLostError,
    LockTimeoutError,
    WaitTimeoutError,
)
from .locks import Lock, LockKey, choose, create_lock

__all__ = ["_Runner", "_Waiting", "_release", "_safe"]

T = TypeVar("T")


class _Runner(Leading):
    def __init__(self, env: Environment, *, lock_kind: str = "auto", lock_key: str | None = None,
                 history_table: str = defaults.HISTORY_TABLE,
                 poll_cap: float = defaults.POLL_INTERVAL,
                 lease_ttl: float = defaults.LEASE_TTL,
                 lock_url: str | URL | None = None, allow_ahead: bool = False,
                 connect_timeout: float = defaults.CONNECT_TIMEOUT) -> None:
        assert env.url is not None
        self.env = env
        self.url: URL = env.url
        # herd's own connection (lock, heads, attempt log): the app's URL, or a direct one
        # when the app's goes through a transaction pooler that cannot keep a session lock.
        self.engine = create_engine(parse_url(lock_url) if lock_url is not None else env.url,
                                    connect_timeout=connect_timeout)
        self.connect_timeout = connect_timeout
        self.allow_ahead = allow_ahead
        self.ahead: tuple[str, ...] = ()
        self.dialect = self.engine.dialect.name
        self.lock_kind = choose(lock_kind, self.dialect)
        database = self.url.database if self.dialect in ("mysql", "mariadb") else None
        self.key = LockKey(lock_key) if lock_key else LockKey.for_version_table(
            env.version_table, env.version_table_schema, database)
        self.scope = env.qualified_version_table
        self.history_table = history_table
        self.poll_cap = max(poll_cap, 0.01)
        self.lease_ttl = lease_ttl
        self.started = time.monotonic()
        self.leading_seconds = 0.0

    # helpers

    def _lock(self, conn: Connection) -> Lock:
        options: dict[str, object] = {"ttl": self.lease_ttl} if self.lock_kind == "table" else {}
        return create_lock(self.lock_kind, conn, self.key, **options)

    def _history(self, conn: Connection) -> History:
        return History(conn, self.scope, table=self.history_table,
                       deferred=self.dialect == "sqlite")

    def _pending(self, conn: Connection, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        heads = read_heads(conn, self.env)
        try:
            return heads, self.env.pending(heads, target)
        except DatabaseAheadError as exc:
            if not self.allow_ahead:
                raise
            if not self.ahead:
                event("ahead", "database is ahead of this code (%s unknown to the scripts); "
                       "allowed, so nothing to do", ", ".join(exc.unknown),
                       level=logging.WARNING, unknown=list(exc.unknown))
            self.ahead = exc.unknown
            return heads, ()

    def _outcome(self, action: str, heads: tuple[str, ...], **kw: Any) -> Outcome:
        return Outcome(action=action, heads=heads,  # type: ignore[arg-type]
                       elapsed=time.monotonic() - self.started, replica=replica(),
                       ahead=self.ahead, **kw)

    @contextmanager
    def _session(self, deadline: Deadline) -> Iterator[Connection]:
        conn = connect(self.engine, deadline)
        try:
            yield conn
        except DBAPIError as exc:  # the connection failed: one clear line (exit 4), and the
            # cause that _reconnecting recognises
            if is_transient(exc):
                raise unavailable(exc, self.url) from exc
            raise
        finally:
            with suppress(DBAPIError):  # server gone: it released whatever the session held
                conn.close()
            self.engine.dispose()

    def _reconnecting(self, cycle: Callable[[], T], deadline: Deadline) -> T:
        """Run one check -> elect -> wait cycle; when a database connection fails on the way
        (a server restart, a network drop, a terminated session), connect again and start
        over until ``deadline``. Starting over is safe even for a leader cut off mid-
        migration: the database rolled its transaction back, or (without transactional DDL)
        the next leader finds the revision ``running`` and stops on it. Time spent
        migrating does not count against the deadline; a replica whose migration loses its
        connection more than ``LEAD_RETRIES`` times gives up (a migration that breaks its
        own connection is not retried until the deadline)."""
        lost_while_leading = 0
        while True:
            self.leading_seconds = 0.0
            try:
                return cycle()
            except (DBAPIError, DatabaseUnavailableError, LockLostError) as exc:
                cause = _connection_failure(exc)
                deadline.extend(self.leading_seconds)
                lost_while_leading += self.leading_seconds > 0
                if cause is None:
                    raise
                if deadline.expired() or lost_while_leading > defaults.LEAD_RETRIES:
                    if isinstance(exc, DBAPIError):
                        raise unavailable(exc, self.url) from exc
                    raise
                event("reconnect", "lost the connection to database %s (%s); connecting "
                       "again and checking the heads, giving up in %s", display(self.url),
                       driver_message(cause, self.url), format_seconds(deadline.remaining()),
                       level=logging.WARNING, error=type(exc).__name__)
                time.sleep(min(random.uniform(0.1, defaults.RECONNECT_PAUSE), deadline.remaining()))

    # upgrade

    def upgrade(self, target: str, deadline: Deadline, command: Sequence[str] | None) -> Outcome:
        self.env.target_revisions(target)  # a bad target fails before any connection
        return self._reconnecting(lambda: self._upgrade(target, deadline, command), deadline)

    def _upgrade(self, target: str, deadline: Deadline, command: Sequence[str] | None
                 ) -> Outcome:
        with self._session(deadline) as conn:
            heads, pending = self._pending(conn, target)
            if not pending:
                event("current", "database %s is current at %s; nothing to do",
                       display(self.url), ", ".join(heads) or "base", heads=list(heads))
                return self._outcome("current", heads)
            lock = self._lock(conn)
            history = self._history(conn)
            baseline = history.baseline()
            event("pending", "%d revision(s) pending (%s -> %s); taking %s",
                   len(pending), ", ".join(heads) or "base", target, lock.describe(),
                   pending=list(pending))
            waiter = _Waiting(self, conn, lock, target, deadline)
            result = poll(lambda: waiter.step(history, baseline, command), deadline,
                           self.poll_cap)
            if result is not None:
                return result
            holder = waiter.holder or _safe(lock.holder)
            raise LockTimeoutError(
                f"{lock.describe()} not acquired after {format_seconds(deadline.seconds)}; "
                f"held by {holder.describe() if holder else 'nobody now'}; database still "
                f"{len(waiter.pending)} revision(s) behind; raise --lock-timeout or see "
                "'herd status'",
                holder=holder,
            )

    # wait

    def wait(self, target: str, deadline: Deadline) -> Outcome:
        self.env.target_revisions(target)
        first = {"first": True}
        return self._reconnecting(lambda: self._wait(target, deadline, first), deadline)

    def _wait(self, target: str, deadline: Deadline, first: dict[str, bool]) -> Outcome:
        with self._session(deadline) as conn:
            history = self._history(conn)
            baseline = history.baseline()
            state: dict[str, Any] = {"first": first["first"], "pending": (), "next_report": 0.0}

            def step() -> Outcome | None:
                heads, pending = self._pending(conn, target)
                state["pending"] = pending
                if not pending:
                    action = "current" if state["first"] else "waited"
                    waited = deadline.elapsed() if action == "waited" else 0.0
                    event(action, "database is current at %s%s", ", ".join(heads),
                           f" after waiting {format_seconds(waited)}" if waited else "",
                           heads=list(heads), waited=waited)
                    return self._outcome(action, heads, waited_seconds=waited)
                failure = history.failure_after(baseline)
                if failure is not None:
                    raise _leader_failed(failure)
                if state["first"] or deadline.elapsed() >= state["next_report"]:
                    event("waiting", "waiting for the database to reach %s: %d revision(s) "
                           "pending, %s so far", target, len(pending),
                           format_seconds(deadline.elapsed()), pending=list(pending))
                    state["next_report"] = deadline.elapsed() + defaults.REPORT_EVERY
                state["first"] = first["first"] = False
                return None

            result = poll(step, deadline, self.poll_cap)
            if result is not None:
                return result
            raise WaitTimeoutError(
                f"database {display(self.url)!r} not at {target} after "
                f"{format_seconds(deadline.seconds)}: {len(state['pending'])} revision(s) "
                f"pending ({', '.join(state['pending'])}); is a replica migrating? see "
                "'herd status', or raise --timeout", pending=tuple(state["pending"]))

    # status

    def status(self, target: str, recent: int) -> Status:
        with self._session(Deadline(self.connect_timeout)) as conn:
            heads, pending = self._pending(conn, target)
            lock = self._lock(conn)
            holder = _safe(lock.holder)
            rows = tuple(self._history(conn).rows(limit=recent))
            return Status(
                url=display(self.url), version_table=self.env.qualified_version_table,
                current_heads=heads, script_heads=self.env.script_heads(), pending=pending,
                lock=lock.describe(), holder=holder, recent=rows, ahead=self.ahead)


class _Waiting:
    """One replica's wait for the lock: each :meth:`step` re-reads the heads, tries the
    lock once, and (every few seconds) logs whom it waits for."""

    def __init__(self, runner: _Runner, conn: Connection, lock: Lock, target: str,
                 deadline: Deadline) -> None:
        self.runner = runner
        self.conn = conn
        self.lock = lock
        self.target = target
        self.deadline = deadline
        self.holder: Holder | None = None
        self.pending: tuple[str, ...] = ()
        self.began: float | None = None
        self.next_report = 0.0

    def step(self, history: History, baseline: int,
             command: Sequence[str] | None) -> Outcome | None:
        runner = self.runner
        if self.began is not None:  # re-check before trying again
            heads, self.pending = runner._pending(self.conn, self.target)
            if not self.pending:
                waited = time.monotonic() - self.began
                event("waited", "database brought to %s by %s; waited %s", ", ".join(heads),
                       self.holder.describe() if self.holder else "another replica",
                       format_seconds(waited), heads=list(heads), waited=waited)
                return runner._outcome("waited", heads, waited_seconds=waited,
                                       leader=self.holder, lock=self.lock.describe())
        if self.lock.try_acquire():
            waited = time.monotonic() - self.began if self.began is not None else 0.0
            began = time.monotonic()
            try:
                outcome = runner.lead(self.conn, self.lock, history, self.target,
                                      baseline=baseline, waited=waited, command=command)
            finally:
                runner.leading_seconds = time.monotonic() - began
                _release(self.lock)
            if outcome.action == "waited" and outcome.leader is None and self.holder:
                outcome = Outcome(**{**outcome.__dict__, "leader": self.holder})
            return outcome
        now = time.monotonic()
        if self.began is None:
            self.began = now
        if now >= self.next_report:
            self.holder = _safe(self.lock.holder) or self.holder
            event("waiting", "waiting for %s held by %s; %s so far, giving up in %s",
                   self.lock.describe(), self.holder.describe() if self.holder else "another "
                   "replica", format_seconds(now - self.began),
                   format_seconds(self.deadline.remaining()),
                   holder=self.holder.describe() if self.holder else None,
                   holder_pid=self.holder.pid if self.holder else None)
            self.next_report = now + defaults.REPORT_EVERY
        return None


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The transient driver error behind ``exc`` (itself, or the cause of herd's
    DatabaseUnavailableError / LockLostError), or ``None`` when ``exc`` is no lost
    connection: bad credentials, a lock taken over while its session lived."""
    for error in (exc, exc.__cause__):
        if isinstance(error, DBAPIError) and is_transient(error):
            return error
    return None


def _release(lock: Lock) -> None:
    try:
        lock.release()
    except SQLAlchemyError as exc:  # the session is gone (or invalidated), and with it a
        # session lock; never mask the error that is on its way out
        log.warning("releasing %s failed (%s); the server frees it with the session",
                    lock.describe(), type(exc).__name__)


def _safe(fn: Callable[[], T]) -> T | None:
    """``fn()``, or ``None`` when its statement fails: for best-effort reads (who holds the
    lock). A lost connection is not swallowed: the next statement on it would raise
    PendingRollbackError instead, which is no connection failure to reconnect from."""
    try:
        return fn()
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        return None
