"""check -> elect -> wait; reconnecting. The leader's half is :mod:`._leader`.

1. Read the database's heads on herd's own autocommit connection. Nothing pending: return
   without taking any lock (every ordinary restart).
2. Otherwise wait for the lock (:meth:`~alembic_herd.locks.Lock.acquire`: a non-blocking
   try-lock with jittered exponential backoff, under one deadline). Between tries, re-read
   the heads: a waiter that sees another replica bring the database current returns
   without ever taking the lock.
3. The process that gets the lock hands it to a :class:`~._leader.Leader`, which migrates.
4. Release. The database server releases session locks by itself if the process dies.

A connection lost on the way (server restart, network drop) starts the cycle over, until
the deadline.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar, cast

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
from ._heads import Pending
from ._log import event, replica
from ._outcome import Action, Outcome, Status
from ._phases import Phase
from ._polling import connect, poll
from ._tables import check_schema, qualified, split_name
from .errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    Holder,
    LockLostError,
    WaitTimeoutError,
)
from .locks import Lock, LockKey, choose, create_lock

if TYPE_CHECKING:
    from . import _fastlane, _lockwait
    from ._history import Attempt, History
    from ._wakeup import Wakeup

# The leader, the downgrade, the attempt log, the lock-wait policy and the wake-up are
# imported where they are first needed: a replica that finds the database current (every
# ordinary restart) needs none of them.

__all__ = ["Runner"]

T = TypeVar("T")

_RECENT = 3
"""How many of the newest attempt-log rows tell whether the leader is retrying."""


class Runner:
    """herd's side of one Alembic project: its own engine, the lock and the attempt log,
    and what a replica does with them (:meth:`upgrade`, :meth:`wait`, :meth:`status`)."""

    def __init__(self, env: Environment, *, lock_kind: str = "auto", lock_key: str | None = None,
                 history_table: str = defaults.HISTORY_TABLE,
                 poll_cap: float = defaults.POLL_INTERVAL,
                 lease_ttl: float = defaults.LEASE_TTL,
                 lock_url: str | URL | None = None, allow_ahead: bool = False,
                 connect_timeout: float = defaults.CONNECT_TIMEOUT,
                 expand_only: bool = False,
                 unmarked_phase: Phase = defaults.UNMARKED_PHASE,
                 lock_wait: _lockwait.Policy | None = None,
                 herd_schema: str | None = defaults.HERD_SCHEMA) -> None:
        assert env.url is not None
        self.env = env
        self.url: URL = env.url
        # herd's own connection (lock, heads, attempt log): the app's URL, or a direct one
        # when the app's goes through a transaction pooler that cannot keep a session lock.
        self.engine = create_engine(parse_url(lock_url) if lock_url is not None else env.url,
                                    connect_timeout=connect_timeout)
        self.connect_timeout = connect_timeout
        self.allow_ahead = allow_ahead
        self.expand_only = expand_only
        self.unmarked_phase = unmarked_phase
        self.dialect = self.engine.dialect.name
        self.lock_kind = choose(lock_kind, self.dialect)
        database = self.url.database if self.dialect in ("mysql", "mariadb") else None
        self.key = LockKey(lock_key) if lock_key else LockKey.for_version_table(
            env.version_table, env.version_table_schema, database)
        # herd's tables: --herd-schema, else the version table's schema (a schema-qualified
        # --history-table names its own)
        named, table = split_name(history_table, option="--history-table")
        self.herd_schema = check_schema(
            self.dialect, named or herd_schema or env.version_table_schema,
            option="--herd-schema" if herd_schema and not named else "--history-table")
        self.history_table = qualified(self.herd_schema, table)
        self.lease_table = qualified(self.herd_schema, defaults.LEASE_TABLE)
        self.poll_cap = max(poll_cap, 0.01)
        self.lease_ttl = lease_ttl
        self.lock_wait = lock_wait

    # -- herd's connection, its lock and its attempt log -------------------------------------

    @contextmanager
    def session(self, deadline: Deadline) -> Iterator[Connection]:
        """herd's own connection, made by ``deadline``; closed (and the engine disposed) on
        the way out. A transient driver error becomes one clear line (exit 4)."""
        conn = connect(self.engine, deadline)
        try:
            self.env.locate(conn)  # where env.py's context keeps the version table (once)
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

    def lock(self, conn: Connection) -> Lock:
        options: dict[str, object] = {"table": self.lease_table}
        if self.lock_kind == "table":
            options["ttl"] = self.lease_ttl
        return create_lock(self.lock_kind, conn, self.key, **options)

    def history(self, conn: Connection, *, optional: bool = False,
                writer: bool = True) -> History:
        """The attempt log; ``optional`` (read-only verbs): a log this user may not read
        counts as empty, so that a runtime role still learns what it can; ``writer=False``:
        this verb only reads it (a refusal names the GRANT to read it)."""
        from ._history import History

        return History(conn, self.env.qualified_version_table, table=self.history_table,
                       deferred=self.dialect == "sqlite", optional=optional, writer=writer)

    def pending(self, target: str) -> Pending:
        """What an upgrade to ``target`` applies, with this runner's rolling-deploy settings."""
        return Pending(self.env, target, allow_ahead=self.allow_ahead,
                       expand_only=self.expand_only, unmarked=self.unmarked_phase,
                       history_table=self.history_table)

    # -- upgrade ---------------------------------------------------------------------------

    def upgrade(self, target: str, deadline: Deadline, command: Sequence[str] | None) -> Outcome:
        """Migrate to ``target`` under the lock, or wait for the replica that does."""
        self.env.target_revisions(target)  # a bad target fails before any connection
        if command and self.expand_only:
            raise ConfigurationError(
                "--expand-only cannot stop a wrapped migration command at the first contract "
                "revision; give the command its own target, or leave out --expand-only")
        call = _Call(deadline, self.pending(target))
        return call.finish(self._reconnecting(call, lambda: self._upgrade(call, command)))

    def _upgrade(self, call: _Call, command: Sequence[str] | None) -> Outcome:
        with self.session(call.deadline) as conn:
            heads, pending = call.pending.read(conn)
            if not pending:
                event("current", "database %s is current at %s; nothing to do",
                      display(self.url), ", ".join(heads) or "base", heads=list(heads))
                self._stamp(conn, call.pending, heads)
                return Outcome(action="current", heads=heads)
            from ._leader import Leader, want_under_lock
            from ._wakeup import Wakeup, notify

            lock = self.lock(conn)
            history = self.history(conn)
            want_under_lock(lock, history, self.dialect)
            baseline = _lane_baseline(history.scope, history.baseline())
            event("pending", "%d revision(s) pending (%s -> %s); taking %s",
                  len(pending), ", ".join(heads) or "base", call.pending.target,
                  lock.describe(), pending=list(pending))
            wakeup = Wakeup(conn, self.key)
            waiter = _Waiter(conn, lock, call, pending, wakeup, history=history)
            led = False
            try:
                with lock.acquire(call.deadline, poll_cap=self.poll_cap, hint=waiter.hint,
                                  while_waiting=waiter.look, pause=wakeup) as held:
                    if not held:
                        outcome = waiter.outcome()
                    else:
                        led = True
                        leader = Leader(self.env, conn, lock, history, call.pending,
                                        baseline=baseline, waited=waiter.waited(),
                                        command=command, lock_wait=self.lock_wait)
                        began = time.monotonic()
                        try:
                            outcome = leader.run()
                        finally:
                            call.leading_seconds = time.monotonic() - began
            finally:
                if led and not conn.invalidated:  # the lock is free: wake the waiters (they
                    # re-read the heads or take it); never mask the error on its way out
                    with suppress(SQLAlchemyError):
                        notify(conn, self.key)
            if outcome.action == "waited" and outcome.leader is None and waiter.holder:
                outcome = replace(outcome, leader=waiter.holder)
            if not conn.invalidated:
                self._stamp(conn, call.pending, outcome.heads, migrated=led)
            return outcome

    def _stamp(self, conn: Connection, pending: Pending, heads: Sequence[str], *,
               migrated: bool = False) -> None:
        """The database is at ``heads`` with nothing pending: for the ``herd`` command's
        fast lane, record it when those are the script heads (:func:`._fastlane.record`)."""
        if pending.ahead or pending.left:
            return
        if lane_request() is None:  # only the command's fast lane asks for a stamp
            return
        from ._fastlane import record  # imported already: lane_request() says so

        record(conn, self.env, heads, url=self.url, herd_schema=self.herd_schema,
               migrated=migrated)

    # -- downgrade -------------------------------------------------------------------------

    def downgrade(self, target: str, deadline: Deadline, *, yes: bool) -> Outcome:
        """Undo the revisions above ``target`` under the lock (see :mod:`._downgrade`)."""
        from ._downgrade import downgrade_under_lock

        started = time.monotonic()
        with self.session(deadline) as conn:
            lock = self.lock(conn)
            with lock.acquire(deadline, poll_cap=self.poll_cap,
                              hint="a migration is running - wait for it, then downgrade"):
                outcome = downgrade_under_lock(self.env, conn, lock, self.history(conn),
                                               target, yes=yes, unmarked=self.unmarked_phase)
        return replace(outcome, elapsed=time.monotonic() - started, replica=replica())

    # -- wait ------------------------------------------------------------------------------

    def wait(self, target: str, deadline: Deadline) -> Outcome:
        """Wait until the database is at ``target``; never takes the lock."""
        self.env.target_revisions(target)
        call = _Call(deadline, self.pending(target))
        return call.finish(self._reconnecting(call, lambda: self._wait(call)))

    def _wait(self, call: _Call) -> Outcome:
        from . import _lockwait
        from ._leader import leader_failed
        from ._wakeup import Wakeup

        deadline, target = call.deadline, call.pending.target
        with self.session(deadline) as conn:
            history = self.history(conn, optional=True, writer=False)
            baseline = history.baseline()
            pending: tuple[str, ...] = ()
            next_report = next_log = 0.0
            recent: list[Attempt] = []
            wakeup = Wakeup(conn, self.key)

            def look() -> Outcome | None:
                nonlocal pending, next_report, next_log, recent
                heads, pending = call.pending.read(conn)
                if not pending:
                    action: Action = "waited" if call.saw_pending else "current"
                    waited = deadline.elapsed() if action == "waited" else 0.0
                    event(action, "database is current at %s%s", ", ".join(heads),
                          f" after waiting {format_seconds(waited)}" if waited else "",
                          heads=list(heads), waited=waited)
                    self._stamp(conn, call.pending, heads)
                    return Outcome(action=action, heads=heads, waited_seconds=waited)
                now = deadline.elapsed()
                report = now >= next_report
                # The attempt log (has the leader failed?) is read on every look only by a
                # plain poller. A LISTENing waiter reads it when notified (a leader notifies
                # at its end, failed or not) and with each report (a lost notification);
                # through a pooler, every POOLED_LOG_EVERY s: there a steady look is one
                # statement, the heads (its load: see POOLED_POLL_INTERVAL)
                if wakeup.pooled:
                    log = full = now >= next_log
                else:
                    log, full = report or wakeup.news, report
                failure = history.failure_after(baseline) if log else None
                if full:  # and whether the latest attempt failed with nobody to retry it
                    recent = history.recent(_RECENT)
                    if failure is None:
                        failure = _abandoned_failure(history, self.lock(conn), recent[:1])
                    next_log = now + defaults.POOLED_LOG_EVERY
                if failure is not None:
                    raise leader_failed(failure)
                if report:
                    retrying = _lockwait.retrying(recent)
                    event("waiting", "waiting for the database to reach %s: %d revision(s) "
                          "pending, %s so far%s", target, len(pending),
                          format_seconds(deadline.elapsed()),
                          f"; {retrying}" if retrying else "", pending=list(pending),
                          retrying=retrying)
                    next_report = now + defaults.REPORT_EVERY
                call.saw_pending = True
                return None

            result = poll(look, deadline, self.poll_cap, wakeup)
            if result is not None:
                return result
            raise WaitTimeoutError(
                f"database {display(self.url)!r} not at {target} after "
                f"{format_seconds(deadline.seconds)}: {len(pending)} revision(s) "
                f"pending ({', '.join(pending)}); is a replica migrating? see "
                "'herd status', or raise --timeout", pending=pending)

    # -- status ----------------------------------------------------------------------------

    def status(self, target: str, recent: int) -> Status:
        reader = self.pending(target)
        with self.session(Deadline(self.connect_timeout)) as conn:
            heads, pending = reader.read(conn)
            lock = self.lock(conn)
            holder = lock.safe_holder()
            # 'herd check' asks for no rows: then the attempt log is not read at all
            history = self.history(conn, optional=True, writer=False)
            rows = tuple(history.recent(recent)) if recent > 0 else ()
            if rows and rows[0].status == "running":  # an attempt in progress: its rows were
                # all written when it started (History.plan); show the one in progress
                rows = (_in_progress(history, rows[0], self.env.applied(heads)), *rows[1:])
            retrying = None
            if holder:
                from . import _lockwait

                retrying = _lockwait.retrying(history.recent(_RECENT))
            if not pending:
                self._stamp(conn, reader, heads)
            return Status(
                url=display(self.url), version_table=self.env.qualified_version_table,
                current_heads=heads, script_heads=self.env.script_heads(), pending=pending,
                lock=lock.describe(), holder=holder, recent=rows, ahead=reader.ahead,
                ahead_expand=reader.ahead_expand, left=reader.left,
                retrying=retrying)

    # -- reconnecting ----------------------------------------------------------------------

    def _reconnecting(self, call: _Call, cycle: Callable[[], T]) -> T:
        """Run one check -> elect -> wait cycle; when a database connection fails on the way
        (a server restart, a network drop, a terminated session), connect again and start
        over until the deadline. Starting over is safe even for a leader cut off mid-
        migration: the database rolled its transaction back, or (without transactional DDL)
        the next leader finds the revision ``running`` and stops on it. Time spent
        migrating does not count against the deadline; a replica whose migration loses its
        connection more than ``LEAD_RETRIES`` times gives up (a migration that breaks its
        own connection is not retried until the deadline)."""
        deadline = call.deadline
        lost_while_leading = 0
        while True:
            call.leading_seconds = 0.0
            try:
                return cycle()
            except (DBAPIError, DatabaseUnavailableError, LockLostError) as exc:
                cause = _connection_failure(exc)
                deadline.extend(call.leading_seconds)
                lost_while_leading += call.leading_seconds > 0
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
                time.sleep(min(random.uniform(0.1, defaults.RECONNECT_PAUSE),
                               deadline.remaining()))


@dataclass
class _Call:
    """One upgrade or wait, across reconnects: its deadline, what it waits for, and what it
    found on the way."""

    deadline: Deadline
    pending: Pending
    started: float = field(default_factory=time.monotonic)
    leading_seconds: float = 0.0
    """Time the current cycle spent migrating: it does not count against the deadline."""
    saw_pending: bool = False
    """(wait) The database was behind at one look: reaching the target is then 'waited'."""

    def finish(self, outcome: Outcome) -> Outcome:
        """``outcome`` stamped with the call's duration, this replica and the revisions the
        database has that this code lacks."""
        return replace(outcome, elapsed=time.monotonic() - self.started, replica=replica(),
                       ahead=self.pending.ahead, ahead_expand=self.pending.ahead_expand,
                       left=self.pending.left)


class _Waiter:
    """A replica waiting for the lock. Between two tries (:meth:`look`) it re-reads the
    heads, and every few seconds logs whom it waits for."""

    def __init__(self, conn: Connection, lock: Lock, call: _Call,
                 pending: tuple[str, ...], wakeup: Wakeup, *, history: History) -> None:
        self.conn = conn
        self.history = history
        self.lock = lock
        self.call = call
        self.wakeup = wakeup
        self.began = time.monotonic()
        self.looked = False
        self.heads: tuple[str, ...] = ()
        self.pending = pending
        self.holder: Holder | None = None
        self.next_report = 0.0

    def look(self) -> bool:
        """Whether the database became current (then the wait is over, without the lock).
        Whom it waits for is asked first, so that the outcome can name who migrated.
        After a silent pause on a connection that LISTENs the heads are not re-read: only
        the leader moves them, and it notifies; a notification lost on the way still ends
        in the lock coming free, and the replica that takes it re-checks the heads."""
        self.looked = True
        now = time.monotonic()
        if now >= self.next_report:
            self.holder = self.lock.safe_holder() or self.holder
            who = self.holder.describe() if self.holder else "another replica"
            from . import _lockwait

            retrying = _lockwait.retrying(self.history.recent(_RECENT))
            event("waiting", "waiting for %s held by %s; %s so far, giving up in %s%s",
                  self.lock.describe(), who, format_seconds(now - self.began),
                  format_seconds(self.call.deadline.remaining()),
                  f"; {retrying}" if retrying else "",
                  holder=self.holder.describe() if self.holder else None,
                  holder_pid=self.holder.pid if self.holder else None, retrying=retrying)
            self.next_report = now + defaults.REPORT_EVERY
        if not self.wakeup.news:
            return False
        self.heads, self.pending = self.call.pending.read(self.conn)
        return not self.pending

    def waited(self) -> float:
        return time.monotonic() - self.began if self.looked else 0.0

    def hint(self) -> str:
        return (f"database still {len(self.pending)} revision(s) behind; raise --lock-timeout "
                "or see 'herd status'")

    def outcome(self) -> Outcome:
        """Another replica brought the database current while this one waited."""
        waited = self.waited()
        event("waited", "database brought to %s by %s; waited %s", ", ".join(self.heads),
              self.holder.describe() if self.holder else "another replica",
              format_seconds(waited), heads=list(self.heads), waited=waited)
        return Outcome(action="waited", heads=self.heads, waited_seconds=waited,
                       leader=self.holder, lock=self.lock.describe())


def lane_request() -> _fastlane.Request | None:
    """The ``herd`` command's fast-lane request of this run, if any. Only the fast lane sets
    one, and the command's entry point is that module: a process that never imported it
    (the library's callers) has none, and need not import it to learn so."""
    fastlane = sys.modules.get(f"{__package__}._fastlane")
    return None if fastlane is None else cast("_fastlane.Request | None", fastlane.REQUEST.get())


def _lane_baseline(scope: str, baseline: int) -> int:
    """``baseline``, or the earlier one the ``herd`` command's fast lane read before it
    waited for another replica (:mod:`._lanewait`): that replica's failure is news."""
    request = lane_request()
    if request is None or request.baselines is None:
        return baseline
    return min(baseline, request.baselines.get(scope, 0))


def _in_progress(history: History, newest: Attempt, applied: set[str]) -> Attempt:
    """The row of ``newest``'s attempt whose revision is in progress: its first ``running``
    row whose revision is not in the version table (``applied``)."""
    t = history.table
    rows = history.rows(where=[t.c.attempt == newest.attempt, t.c.status == "running"],
                        newest_first=False)
    return next((row for row in rows if row.revision not in applied), newest)


def _abandoned_failure(history: History, lock: Lock,
                       latest: Sequence[Attempt] | None = None) -> Attempt | None:
    """The latest attempt (``latest``: the newest row, already read), when it failed and
    nobody holds the lock to try again: a waiter that starts after a failed migration
    reports it instead of waiting out its timeout for a migration nobody runs."""
    from ._leader import BY_COMMAND, NEXT_OF_COMMAND

    latest = history.rows(limit=1) if latest is None else latest
    if not latest:
        return None
    failed = latest[0] if latest[0].status == "failed" else None
    if (latest[0].error or "").startswith((BY_COMMAND, NEXT_OF_COMMAND)):  # a wrapped
        # command's attempt writes its own row first, then the revisions it applied
        t = history.table
        rows = history.rows(where=[t.c.attempt == latest[0].attempt, t.c.status == "failed"],
                            limit=1, newest_first=False)
        failed = rows[0] if rows else None
    if failed is not None and lock.safe_holder() is None:
        return failed
    return None


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The transient driver error behind ``exc`` (itself, or the cause of herd's
    DatabaseUnavailableError / LockLostError), or ``None`` when ``exc`` is no lost
    connection: bad credentials, a lock taken over while its session lived."""
    for error in (exc, exc.__cause__):
        if isinstance(error, DBAPIError) and is_transient(error):
            return error
    return None
