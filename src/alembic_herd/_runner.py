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
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script.base import Script
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    wait_random_exponential,
)

from . import _history
from ._database import (
    HOST,
    PID,
    create_engine,
    display,
    driver_message,
    is_transient,
    mask_text,
    parse_url,
    sync_url,
    unavailable,
)
from ._durations import Deadline, Duration, format_seconds, to_seconds
from ._environment import (
    Captured,
    Environment,
    capturing_context,
    load_environment,
    preserve_logging,
)
from ._heads import read_heads
from ._history import Attempt, History, describe_error
from ._outcome import Outcome, Status
from .errors import (
    CommandFailedError,
    ConfigurationError,
    DatabaseAheadError,
    DatabaseUnavailableError,
    HerdError,
    Holder,
    IncompleteRevisionError,
    LeaderFailedError,
    LockHeldError,
    LockTimeoutError,
    MigrationError,
    WaitTimeoutError,
)
from .locks import Lock, LockKey, choose, create_lock

log = logging.getLogger("alembic_herd")

DEFAULT_LOCK_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 0.5
REPORT_EVERY = 5.0
REPLICA = f"{HOST}:{PID}"

T = TypeVar("T")


def _event(event: str, msg: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """One log line; ``herd_event`` and the fields ride along for structured formatters."""
    log.log(level, msg, *args, extra={"herd_event": event, "herd": fields, "replica": REPLICA})


# -- connecting ---------------------------------------------------------------------------


def _stop_at(deadline: Deadline) -> Callable[[RetryCallState], bool]:
    return lambda _state: deadline.expired()


def _connect(engine: Engine, deadline: Deadline) -> Connection:
    """A connection, retrying transient failures (server starting, too many connections)
    with jittered backoff until ``deadline``; credentials and unknown databases fail at once."""
    said = False

    def before_sleep(state: RetryCallState) -> None:
        nonlocal said
        exc = state.outcome.exception() if state.outcome else None
        if not said and exc is not None:
            _event("connect_retry", "waiting for database %s to accept connections (%s); "
                   "giving up in %s", display(engine.url), driver_message(exc, engine.url),
                   format_seconds(deadline.remaining()), level=logging.WARNING)
            said = True

    retrying = Retrying(
        stop=_stop_at(deadline),
        wait=wait_random_exponential(multiplier=0.1, max=3.0),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(engine.connect)
    except DBAPIError as exc:
        raise unavailable(exc, engine.url) from exc


def _poll(step: Callable[[], T | None], deadline: Deadline, cap: float) -> T | None:
    """Call ``step`` until it returns a value or ``deadline`` passes (then ``None``).

    Sleeps are full-jitter exponential (50 ms doubling, capped at ``cap``), so a herd
    that starts together spreads out instead of polling in lockstep.
    """
    retrying = Retrying(
        stop=_stop_at(deadline),
        wait=wait_random_exponential(multiplier=0.05, max=cap),
        retry=retry_if_result(lambda result: result is None),
        retry_error_callback=lambda _state: None,
    )
    return retrying(step)


# -- the public operations ----------------------------------------------------------------


def upgrade(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    lock_timeout: Duration | str = DEFAULT_LOCK_TIMEOUT,
    lock: str = "auto",
    lock_key: str | None = None,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = _history.DEFAULT_TABLE,
    command: Sequence[str] | None = None,
    poll_interval: Duration | str = DEFAULT_POLL_INTERVAL,
    lease_ttl: Duration | str = 30.0,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
) -> Outcome:
    """Bring the database to ``target``: migrate under the lock, or wait for whoever does.

    ``config`` is an Alembic ``Config`` or the path of an alembic.ini. ``lock_timeout``
    bounds connecting plus waiting for the lock (not the migration itself). ``command``,
    when given, is run while holding the lock instead of Alembic's upgrade (for apps whose
    migration entry point is their own CLI); the scripts' heads still decide whether
    anything is pending. ``lock_url`` is a direct connection for herd's lock and reads when
    ``url`` goes through a transaction pooler. ``allow_ahead`` treats a database at
    revisions this code does not know (a rollback, a rolling deploy) as current instead of
    raising :class:`~alembic_herd.errors.DatabaseAheadError`. Returns an :class:`Outcome`;
    raises a
    :class:`~alembic_herd.errors.HerdError` subclass on failure.
    """
    deadline = Deadline(to_seconds(lock_timeout, name="lock timeout"))
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        lock_kind=lock, lock_key=lock_key, history_table=history_table,
        poll_cap=to_seconds(poll_interval, name="poll interval"),
        lease_ttl=to_seconds(lease_ttl, name="lease ttl"),
        lock_url=lock_url, allow_ahead=allow_ahead,
    )
    return runner.upgrade(target, deadline, command)


def wait_until_current(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    timeout: Duration | str = DEFAULT_TIMEOUT,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = _history.DEFAULT_TABLE,
    poll_interval: Duration | str = DEFAULT_POLL_INTERVAL,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
) -> Outcome:
    """Wait until the database is at ``target``; never migrates, never takes the lock.

    For workers and schedulers that must not migrate. Raises
    :class:`~alembic_herd.errors.LeaderFailedError` as soon as the attempt log shows the
    migrating replica failed, and :class:`~alembic_herd.errors.WaitTimeoutError` at the
    deadline.
    """
    deadline = Deadline(to_seconds(timeout, name="timeout"))
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        history_table=history_table, poll_cap=to_seconds(poll_interval, name="poll interval"),
        lock_url=lock_url, allow_ahead=allow_ahead,
    )
    return runner.wait(target, deadline)


def status(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    lock: str = "auto",
    lock_key: str | None = None,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = _history.DEFAULT_TABLE,
    recent: int = 5,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
) -> Status:
    """Current heads, script heads, pending revisions, the lock holder, recent attempts."""
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        lock_kind=lock, lock_key=lock_key, history_table=history_table,
        lock_url=lock_url, allow_ahead=allow_ahead,
    )
    return runner.status(target, recent)


def history(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    limit: int = 50,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = _history.DEFAULT_TABLE,
    lock_url: str | URL | None = None,
) -> list[Attempt]:
    """The attempt log for this project's version table, newest first."""
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        history_table=history_table, lock_url=lock_url,
    )
    with runner._session(Deadline(10.0)) as conn:
        return runner._history(conn).rows(limit=limit)


def resolve(
    config: Config | str | os.PathLike[str],
    revision: str,
    *,
    url: str | URL | None = None,
    lock: str = "auto",
    lock_key: str | None = None,
    lock_timeout: Duration | str = 30.0,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = _history.DEFAULT_TABLE,
    lock_url: str | URL | None = None,
) -> int:
    """Mark ``revision``'s unfinished or failed attempts as resolved, after an operator
    repaired a half-applied revision by hand. Takes the lock, so it cannot race a running leader.
    Returns how many attempts were resolved."""
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        lock_kind=lock, lock_key=lock_key, history_table=history_table, lock_url=lock_url,
    )
    deadline = Deadline(to_seconds(lock_timeout, name="lock timeout"))
    with runner._session(deadline) as conn:
        the_lock = runner._lock(conn)
        if _poll(lambda: the_lock.try_acquire() or None, deadline, runner.poll_cap) is None:
            holder = _safe(the_lock.holder)
            raise LockTimeoutError(
                f"{the_lock.describe()} is held by "
                f"{holder.describe() if holder else 'another replica'}; a migration is "
                "running - wait for it, then resolve", holder=holder)
        try:
            hist = runner._history(conn)
            rows = [r for r in (*hist.unfinished(), *hist.unresolved_failures())
                    if r.revision == revision]
            if not rows:
                raise ConfigurationError(
                    f"revision {revision!r} has no unfinished or failed attempt to resolve in "
                    f"{hist.table.fullname!r}; 'herd history' lists the attempts")
            for row in rows:
                hist.restate(row, "resolved", f"resolved by an operator on {HOST} (pid {PID})")
            _event("resolved", "marked %d attempt(s) of %s resolved", len(rows), revision)
            return len(rows)
        finally:
            _release(the_lock)


def unlock(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    lock: str = "auto",
    lock_key: str | None = None,
    lock_url: str | URL | None = None,
    force: bool = False,
    version_table: str | None = None,
    version_table_schema: str | None = None,
) -> str:
    """Clear a stale migration lock, refusing while its holder is alive.

    Session locks (PostgreSQL advisory, MySQL ``GET_LOCK``, the SQLite file lock) cannot be
    stale: the server or kernel frees them when the holder's session or process ends, so
    while one is held its holder is alive and this raises
    :class:`~alembic_herd.errors.LockHeldError` naming it. A lease is broken when it has
    expired, when its holder was on this host and its pid is gone, or with ``force``
    (the holder is then fenced before its next revision). Returns what was done.
    """
    runner = _Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema),
        lock_kind=lock, lock_key=lock_key, lock_url=lock_url,
    )
    with runner._session(Deadline(30.0)) as conn:
        the_lock = runner._lock(conn)
        if the_lock.try_acquire():
            _release(the_lock)
            return f"{the_lock.describe()} is free; nothing to do"
        holder = _safe(the_lock.holder)
        who = holder.describe() if holder else "another replica"
        from .locks.lease import LeaseLock

        if isinstance(the_lock, LeaseLock):
            dead_here = (holder is not None and holder.host == HOST and holder.pid is not None
                         and not _pid_alive(holder.pid))
            if dead_here or force:
                the_lock.break_lease()
                reason = "its process is gone" if dead_here else "--force"
                _event("unlocked", "broke %s held by %s (%s)", the_lock.describe(), who,
                       reason, level=logging.WARNING)
                return f"broke {the_lock.describe()} held by {who} ({reason})"
            raise LockHeldError(
                f"{the_lock.describe()} is held by {who} and its lease is being renewed, so "
                "the holder is alive; stop it, wait for the lease to expire, or use --force "
                "(the holder then stops before its next revision)", holder=holder)
        raise LockHeldError(
            f"{the_lock.describe()} is held by {who}: a session lock is freed by the server "
            "when its holder's session ends, so the holder is alive; stop that process (or end "
            "its database session) instead", holder=holder)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the runner ---------------------------------------------------------------------------


class _Runner:
    def __init__(self, env: Environment, *, lock_kind: str = "auto", lock_key: str | None = None,
                 history_table: str = _history.DEFAULT_TABLE,
                 poll_cap: float = DEFAULT_POLL_INTERVAL, lease_ttl: float = 30.0,
                 lock_url: str | URL | None = None, allow_ahead: bool = False) -> None:
        assert env.url is not None
        self.env = env
        self.url: URL = env.url
        # herd's own connection (lock, heads, attempt log): the app's URL, or a direct one
        # when the app's goes through a transaction pooler that cannot keep a session lock.
        self.engine = create_engine(parse_url(lock_url) if lock_url is not None else env.url)
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
                _event("ahead", "database is ahead of this code (%s unknown to the scripts); "
                       "allowed, so nothing to do", ", ".join(exc.unknown),
                       level=logging.WARNING, unknown=list(exc.unknown))
            self.ahead = exc.unknown
            return heads, ()

    def _outcome(self, action: str, heads: tuple[str, ...], **kw: Any) -> Outcome:
        return Outcome(action=action, heads=heads,  # type: ignore[arg-type]
                       elapsed=time.monotonic() - self.started, replica=REPLICA,
                       ahead=self.ahead, **kw)

    @contextmanager
    def _session(self, deadline: Deadline) -> Iterator[Connection]:
        conn = _connect(self.engine, deadline)
        try:
            yield conn
        finally:
            with suppress(DBAPIError):  # server gone: it released whatever the session held
                conn.close()
            self.engine.dispose()

    # upgrade

    def upgrade(self, target: str, deadline: Deadline, command: Sequence[str] | None) -> Outcome:
        self.env.target_revisions(target)  # a bad target fails before any connection
        with self._session(deadline) as conn:
            heads, pending = self._pending(conn, target)
            if not pending:
                _event("current", "database %s is current at %s; nothing to do",
                       display(self.url), ", ".join(heads) or "base", heads=list(heads))
                return self._outcome("current", heads)
            lock = self._lock(conn)
            history = self._history(conn)
            baseline = history.baseline()
            _event("pending", "%d revision(s) pending (%s -> %s); taking %s",
                   len(pending), ", ".join(heads) or "base", target, lock.describe(),
                   pending=list(pending))
            waiter = _Waiting(self, conn, lock, target, deadline)
            result = _poll(lambda: waiter.step(history, baseline, command), deadline,
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

    def lead(self, conn: Connection, lock: Lock, history: History, target: str, *,
             baseline: int, waited: float, command: Sequence[str] | None) -> Outcome:
        heads, pending = self._pending(conn, target)
        if not pending:
            _event("current_after_lock", "database became current at %s while waiting; "
                   "not migrating", ", ".join(heads), heads=list(heads))
            return self._outcome("waited" if waited else "current", heads,
                                 waited_seconds=waited)
        failure = history.failure_after(baseline)
        if failure is not None:
            raise _leader_failed(failure)
        try:
            history.ensure()
        except DBAPIError as exc:  # e.g. no CREATE on the schema: Alembic would fail too
            if is_transient(exc):
                raise unavailable(exc, self.url) from exc
            raise MigrationError(
                f"could not create herd's attempt log {history.table.fullname!r}: "
                f"{driver_message(exc, self.url)}; the migrating user needs the right to "
                "create tables there (Alembic creates its version table and yours too)"
            ) from exc
        self._reconcile(conn, history, heads)
        attempt = uuid.uuid4().hex
        _event("leading", "this replica migrates: %d revision(s) %s -> %s", len(pending),
               ", ".join(heads) or "base", target, pending=list(pending), attempt=attempt)
        began = time.monotonic()
        if command:
            self._run_command(conn, history, attempt, pending, command)
        else:
            self._run_alembic(conn, lock, history, attempt, target)
        took = time.monotonic() - began
        heads_after, left = self._pending(conn, target)
        if left:
            raise MigrationError(
                f"the upgrade finished but {self.env.qualified_version_table!r} is still "
                f"behind by {', '.join(left)}; env.py may write another version table - set "
                "version_table/version_table_schema for herd", revision=left[0])
        applied = self.env.applied(heads_after) - self.env.applied(heads)
        revisions = tuple(r for r in pending if r in applied)
        _event("migrated", "migrated %d revision(s) to %s in %s", len(revisions),
               ", ".join(heads_after), format_seconds(took), revisions=list(revisions),
               seconds=took)
        return self._outcome("migrated", heads_after, revisions=revisions, migrate_seconds=took,
                             waited_seconds=waited, lock=lock.describe())

    def _reconcile(self, conn: Connection, history: History, heads: tuple[str, ...]) -> None:
        """Account for attempts a dead leader left ``running``, and refuse to go on where a
        database without transactional DDL may hold a half-applied revision."""
        applied = self.env.applied(heads)
        transactional = self._transactional(conn)
        if not transactional:
            for row in history.unresolved_failures():
                if row.revision not in applied:
                    raise IncompleteRevisionError(
                        f"revision {row.revision} failed (pid {row.pid} on host {row.host} at "
                        f"{(row.finished or row.started).isoformat(timespec='seconds')}: "
                        f"{_headline(row.error)}); {self.dialect} DDL is not transactional, "
                        "so the schema may be partly changed. Inspect it, undo the partial "
                        "change (or complete it and 'alembic stamp'), then run "
                        f"'herd resolve {row.revision}'", revision=row.revision)
        unfinished = history.unfinished()
        if not unfinished:
            return
        for row in unfinished:
            if row.revision in applied:
                history.restate(row, "applied", "leader stopped before recording the end; "
                                "the revision is in the version table")
            elif not transactional:
                raise IncompleteRevisionError(
                    f"revision {row.revision} was started by pid {row.pid} on host {row.host} "
                    f"at {row.started.isoformat(timespec='seconds')} and never finished; "
                    f"{self.dialect} DDL is not transactional, so the schema may be partly "
                    "changed. Inspect it, undo or complete the change (then 'alembic stamp' "
                    f"if completed), and run 'herd resolve {row.revision}'",
                    revision=row.revision)
            else:
                history.restate(row, "interrupted", "leader died mid-migration; the database "
                                "rolled the revision back")
                for other in history.of_attempt(row.attempt):
                    if other.status == "applied" and other.revision not in applied:
                        history.restate(other, "rolled back",
                                        "its transaction did not commit (leader died)")
        _event("reconciled", "accounted for %d revision(s) a previous leader left running",
               len(unfinished), level=logging.WARNING)

    def _transactional(self, conn: Connection) -> bool:
        if self.env.transactional_ddl is not None:
            return self.env.transactional_ddl
        from alembic.ddl.impl import DefaultImpl

        return bool(DefaultImpl.get_by_dialect(conn.dialect).transactional_ddl)

    def _run_alembic(self, conn: Connection, lock: Lock, history: History, attempt: str,
                     target: str) -> None:
        env = self.env
        rows: list[Attempt] = []

        def steps(heads: tuple[str, ...], context: MigrationContext) -> Iterator[Any]:
            self._check_same_target(context)
            for step in env.script._upgrade_revs(target, heads):  # type: ignore[arg-type]
                script: Script = step.revision
                lock.verify()  # fencing: never start a revision without the lock
                row = history.start(attempt, script.revision)
                rows.append(row)
                _event("revision_start", "applying %s (%s)", script.revision,
                       (script.doc or "").strip().splitlines()[0] if script.doc else "",
                       revision=script.revision)
                yield step
                lock.verify()  # before writing on herd's connection: a dead lock session
                # is a lost lock (one transaction: all of it rolls back), not a failed revision
                history.finish(row, "applied")
                _event("revision_done", "applied %s in %s", script.revision,
                       format_seconds(row.duration or 0.0), revision=script.revision,
                       seconds=row.duration)

        ctx, self._captured = capturing_context(env.config, env.script, fn=steps,
                                                as_sql=False, destination_rev=target)
        saved = preserve_logging[0]()
        try:
            with ctx:
                env.script.run_env()
        except HerdError:
            self._record_failure(conn, history, rows, "stopped by herd")
            raise
        except Exception as exc:
            error = describe_error(exc, self.url)
            failed = self._record_failure(conn, history, rows, error)
            if failed is None and isinstance(exc, DBAPIError) and is_transient(exc):
                raise DatabaseUnavailableError(
                    f"env.py could not reach the database: {driver_message(exc, self.url)}; "
                    "check the URL env.py uses") from exc
            where = f"revision {failed}" if failed else "env.py (before any revision ran)"
            first = _headline(error) or type(exc).__name__
            if failed and not self._transactional(conn):
                advice = (f"{self.dialect} DDL is not transactional, so {failed} may be partly "
                          "applied: inspect the schema, undo the partial change, then 'herd "
                          f"resolve {failed}' and redeploy the fixed migration")
            else:
                advice = ("nothing after it was applied - fix the migration and redeploy "
                          "('herd history' has the details)")
            raise MigrationError(f"{where} failed: {first}; {advice}", revision=failed) from exc
        finally:
            preserve_logging[1](saved)
        history.flush()

    def _record_failure(self, conn: Connection, history: History, rows: list[Attempt],
                        error: str) -> str | None:
        failed = None
        try:
            for row in rows:
                if row.status == "running":
                    history.finish(row, "failed", error)
                    failed = row.revision
            applied = self.env.applied(read_heads(conn, self.env))
            for row in rows:
                if row.status == "applied" and row.revision not in applied:
                    history.restate(row, "rolled back", f"its transaction rolled back after "
                                    f"{failed or 'an error'} failed")
            history.flush()
        except SQLAlchemyError as exc:  # connection gone (or invalidated, awaiting a
            # rollback): never mask the real error; the next leader reconciles
            log.warning("could not record the failure in the attempt log: %s",
                        driver_message(exc, self.url))
        return failed

    def _check_same_target(self, context: MigrationContext) -> None:
        """Refuse to migrate when env.py's version table or database is not the one herd
        locked and watches: waiters would never see the result."""
        env = self.env
        if (context.version_table, context.version_table_schema) != (
                env.version_table, env.version_table_schema):
            seen = (f"{context.version_table_schema}.{context.version_table}"
                    if context.version_table_schema else context.version_table)
            raise ConfigurationError(
                f"env.py uses version table {seen!r} but herd watches "
                f"{env.qualified_version_table!r}; pass --version-table/--version-table-schema "
                "(env.py's offline mode did not tell)")
        captured: Captured | None = getattr(self, "_captured", None)
        conn = captured.connection if captured else None
        if (conn is not None and captured is not None and captured.in_transaction
                and conn is env.config.attributes.get("connection")):
            raise ConfigurationError(
                "config.attributes['connection'] is inside a transaction (engine.begin(), or "
                "a statement not yet committed): Alembic leaves that transaction to the "
                "caller, so the migration would commit only after herd released the lock; "
                "pass a connection with no transaction open (engine.connect(), or commit "
                "first)")
        if conn is not None and not _same_database(conn.engine.url, self.url):
            raise ConfigurationError(
                f"env.py migrates {display(conn.engine.url)!r} but herd locks "
                f"{display(self.url)!r}; give herd the same URL (--url / DATABASE_URL)")
        if conn is not None and not _same_server(conn.engine.url, self.url):
            log.warning("env.py connects to %s, herd to %s: make sure both name one server",
                        display(conn.engine.url), display(self.url))

    def _run_command(self, conn: Connection, history: History, attempt: str,
                     pending: tuple[str, ...], command: Sequence[str]) -> None:
        rows = [history.start(attempt, rev) for rev in pending]
        _event("command", "running %s while holding the lock",
               mask_text(" ".join(command), self.url))
        try:
            proc = subprocess.run(list(command), env={**os.environ, "HERD_LOCK_HELD": "1"},
                                  check=False)
        except FileNotFoundError as exc:
            for row in rows:
                history.finish(row, "failed", f"command not found: {command[0]}")
            history.flush()
            raise ConfigurationError(
                f"migration command {command[0]!r} not found; check the command after '--' "
                "and PATH") from exc
        applied = self.env.applied(read_heads(conn, self.env))
        error = None if proc.returncode == 0 else f"{command[0]} exited {proc.returncode}"
        for row in rows:
            if row.revision in applied:
                history.finish(row, "applied")
            else:
                history.finish(row, "failed", error or "not applied by the command")
        history.flush()
        if proc.returncode != 0:
            raise CommandFailedError(
                f"migration command {' '.join(command)!r} exited {proc.returncode}; its output "
                "is above", returncode=proc.returncode)

    # wait

    def wait(self, target: str, deadline: Deadline) -> Outcome:
        self.env.target_revisions(target)
        with self._session(deadline) as conn:
            history = self._history(conn)
            baseline = history.baseline()
            state: dict[str, Any] = {"first": True, "pending": (), "next_report": 0.0}

            def step() -> Outcome | None:
                heads, pending = self._pending(conn, target)
                state["pending"] = pending
                if not pending:
                    action = "current" if state["first"] else "waited"
                    waited = deadline.elapsed() if action == "waited" else 0.0
                    _event(action, "database is current at %s%s", ", ".join(heads),
                           f" after waiting {format_seconds(waited)}" if waited else "",
                           heads=list(heads), waited=waited)
                    return self._outcome(action, heads, waited_seconds=waited)
                failure = history.failure_after(baseline)
                if failure is not None:
                    raise _leader_failed(failure)
                if state["first"] or deadline.elapsed() >= state["next_report"]:
                    _event("waiting", "waiting for the database to reach %s: %d revision(s) "
                           "pending, %s so far", target, len(pending),
                           format_seconds(deadline.elapsed()), pending=list(pending))
                    state["next_report"] = deadline.elapsed() + REPORT_EVERY
                state["first"] = False
                return None

            result = _poll(step, deadline, self.poll_cap)
            if result is not None:
                return result
            raise WaitTimeoutError(
                f"database {display(self.url)!r} not at {target} after "
                f"{format_seconds(deadline.seconds)}: {len(state['pending'])} revision(s) "
                f"pending ({', '.join(state['pending'])}); is a replica migrating? see "
                "'herd status', or raise --timeout", pending=tuple(state["pending"]))

    # status

    def status(self, target: str, recent: int) -> Status:
        with self._session(Deadline(10.0)) as conn:
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
                _event("waited", "database brought to %s by %s; waited %s", ", ".join(heads),
                       self.holder.describe() if self.holder else "another replica",
                       format_seconds(waited), heads=list(heads), waited=waited)
                return runner._outcome("waited", heads, waited_seconds=waited,
                                       leader=self.holder, lock=self.lock.describe())
        if self.lock.try_acquire():
            waited = time.monotonic() - self.began if self.began is not None else 0.0
            try:
                outcome = runner.lead(self.conn, self.lock, history, self.target,
                                      baseline=baseline, waited=waited, command=command)
            finally:
                _release(self.lock)
            if outcome.action == "waited" and outcome.leader is None and self.holder:
                outcome = Outcome(**{**outcome.__dict__, "leader": self.holder})
            return outcome
        now = time.monotonic()
        if self.began is None:
            self.began = now
        if now >= self.next_report:
            self.holder = _safe(self.lock.holder) or self.holder
            _event("waiting", "waiting for %s held by %s; %s so far, giving up in %s",
                   self.lock.describe(), self.holder.describe() if self.holder else "another "
                   "replica", format_seconds(now - self.began),
                   format_seconds(self.deadline.remaining()),
                   holder=self.holder.describe() if self.holder else None)
            self.next_report = now + REPORT_EVERY
        return None


def _release(lock: Lock) -> None:
    try:
        lock.release()
    except SQLAlchemyError as exc:  # the session is gone (or invalidated), and with it a
        # session lock; never mask the error that is on its way out
        log.warning("releasing %s failed (%s); the server frees it with the session",
                    lock.describe(), type(exc).__name__)


def _safe(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except DBAPIError:
        return None


def _headline(error: str | None) -> str:
    """The line of a :func:`describe_error` text that says what failed: the first unindented
    line (a SQLAlchemy error's first line, before its [SQL: ...] and Background link; a
    SyntaxError's last line, after the indented source excerpt)."""
    lines = [line.strip() for line in (error or "").splitlines()
             if line.strip() and not line[0].isspace()
             and not line.startswith(("[SQL:", "[parameters:", "(Background on this error"))]
    return lines[0] if lines else (error or "").strip()


def _leader_failed(row: Attempt) -> LeaderFailedError:
    first = _headline(row.error) or "no error recorded"
    return LeaderFailedError(
        f"the replica that migrated (pid {row.pid} on host {row.host}) failed on revision "
        f"{row.revision} at {(row.finished or row.started).isoformat(timespec='seconds')}: "
        f"{first}; fix the migration and redeploy ('herd history' has the details)",
        revision=row.revision, host=row.host, pid=row.pid, at=row.finished, error=row.error)


def _same_database(a: URL, b: URL) -> bool:
    """Same backend and database name (hosts may be spelt differently: localhost, an IP)."""
    a, b = sync_url(a), sync_url(b)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return os.path.realpath(a.database or "") == os.path.realpath(b.database or "")
    return a.database == b.database


def _same_server(a: URL, b: URL) -> bool:
    return (a.host, a.port, a.query.get("host")) == (b.host, b.port, b.query.get("host"))
