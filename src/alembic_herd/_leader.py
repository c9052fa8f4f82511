"""The leader: migrate under the lock, with fencing and an attempt log.

The runner hands the lock to a :class:`Leader`, whose :meth:`Leader.run`:

1. re-checks the heads (someone may have just finished);
2. reports the failure of a leader it waited for instead of repeating it;
3. accounts for revisions a dead leader left ``running`` (and stops where a database
   without transactional DDL may hold one half-applied);
4. runs Alembic's upgrade in-process (or the user's command). Before each revision it
   verifies that it still holds the lock (fencing), and logs each revision's start and
   end in the attempt log.

Only an exception raised by a revision or env.py is the migration's failure (a
``failed`` row, :class:`~alembic_herd.errors.MigrationError`). One raised by herd's own
bookkeeping between two revisions is herd's: it propagates as it is and the attempt log
says so, so that a bug in herd never blocks a database until ``herd resolve``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script.base import Script
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import _command, _lockwait
from ._database import (
    SERVER_KEEPALIVES,
    display,
    driver_message,
    error_code,
    is_transient,
    mask_text,
    sync_url,
    unavailable,
)
from ._defaults import GRAPH_TABLE, NOTIFY_EVERY, RACE_GRACE, RACE_PAUSE, RACE_RETRIES
from ._durations import format_seconds
from ._environment import (
    Captured,
    Environment,
    capturing_context,
    effective_schema_column,
    preserved_logging,
)
from ._graph import beside as graph_beside
from ._graph import record as record_graph
from ._heads import Pending, read_heads
from ._history import SHARED_TRANSACTION, Attempt, History, describe_error
from ._log import event, log
from ._outcome import Outcome
from ._signals import Interrupted, shielded
from ._tables import denied, exists_column, grant_to_create, qualified
from ._wakeup import notify
from .errors import (
    CommandFailedError,
    ConfigurationError,
    DatabaseUnavailableError,
    HerdError,
    Holder,
    IncompleteRevisionError,
    LeaderFailedError,
    LockLostError,
    LockWaitError,
    MigrationError,
    PrivilegeError,
)
from .locks import Lock

OUTSIDER = Holder(detail="a migration runner outside herd")

BY_COMMAND = "applied by the migration command"
"""How the attempt log's row of a revision a wrapped command applied begins."""
NEXT_OF_COMMAND = "next when the migration command stopped"
"""How the row of the revision a failed wrapped command may have left half-applied begins."""

ENV_PY = "env.py"
"""The attempt log's revision for a failure of env.py itself, before any revision ran."""

# The signatures of two runners migrating at once (the incident's errors): PostgreSQL
# duplicate_table, duplicate_object, unique_violation (pg_type_typname_nsp_index, the
# version table), duplicate_column, duplicate_schema, deadlock_detected,
# serialization_failure; MySQL/MariaDB table exists, duplicate column / key name / entry,
# deadlock; and Alembic's own "Online migration expected to match one row".
_RACE_SQLSTATES = {"42P07", "42710", "23505", "42701", "42P06", "40P01", "40001"}
_RACE_MYSQL = {1050, 1060, 1061, 1062, 1213}
_RACE_TEXT = ("expected to match one row", "already exists", "duplicate key",
              "pg_type_typname_nsp_index", "deadlock detected")


def _race_signature(exc: BaseException) -> bool:
    if error_code(exc) in _RACE_SQLSTATES | _RACE_MYSQL:
        return True
    text = str(exc).lower()
    return any(sign in text for sign in _RACE_TEXT)


class _Raced(Exception):  # an internal signal: never escapes Leader.run()
    def __init__(self, error: MigrationError) -> None:
        super().__init__(str(error))
        self.error = error


class _LockWaited(Exception):  # an internal signal: never escapes Leader.run()
    def __init__(self, row: Attempt, waited: float, blocker: str | None) -> None:
        super().__init__(row.revision)
        self.row = row
        self.waited = waited
        self.blocker = blocker


class Leader:
    """This replica holds the lock: it re-checks the heads, accounts for earlier attempts,
    runs the migration with fencing and records every revision. One per lock taken; the
    runner creates it and calls :meth:`run`."""

    def __init__(self, env: Environment, conn: Connection, lock: Lock, history: History,
                 pending: Pending, *, baseline: int, waited: float,
                 command: Sequence[str] | None,
                 lock_wait: _lockwait.Policy | None = None) -> None:
        assert env.url is not None
        self.env = env
        self.url: URL = env.url
        self.conn = conn
        self.dialect = conn.dialect.name
        self.lock = lock
        self.history = history
        self.pending = pending
        self.target = pending.target
        self.baseline = baseline
        self.waited = waited
        self.command = command
        self.committed: list[str] = []
        """Revisions this replica committed (after a collision, only these are its own)."""
        self._captured: Captured | None = None
        self._next_wake = 0.0
        self._notified = False  # the last revision's transaction notified (see fence)
        self.lock_wait = lock_wait or _lockwait.Policy()
        self._retries = _lockwait.Retries(self.lock_wait)

    def run(self) -> Outcome:
        """Bring the database to the target; the runner adds the call's duration."""
        conn, lock, history, waited = self.conn, self.lock, self.history, self.waited
        heads, pending = self.pending.read(conn)
        if not pending:
            event("current_after_lock", "database became current at %s while waiting; "
                  "not migrating", ", ".join(heads), heads=list(heads))
            return Outcome(action="waited" if waited else "current", heads=heads,
                           waited_seconds=waited)
        log_exists = history.exists(known=self.lock.seen.get("log"))  # under the lock
        # (read with its take, see want_under_lock): when missing, reads of this
        # scope's rows answer without a round trip until herd creates it (History.absent)
        failure = history.failure_after(self.baseline)
        if failure is not None:
            raise leader_failed(failure)
        self.target = self.pending.goal  # with --expand-only: the last expand revision
        scripts = [self.env.script.get_revision(r) for r in pending]
        if log_exists:  # its graph too, unless an older herd made the log alone
            _herds_tables(self, scripts, log_exists=True)()
        elif _eager_tables():
            _herds_tables(self, scripts)()
        else:  # no footprint before the application's: see _history.History.create_late
            _may_create(conn, history.table.schema, self.url, known=(
                (self.lock.seen["create"], self.lock.seen["create_in"])
                if "create" in self.lock.seen else None))
            history.create_late(_herds_tables(self, scripts))
        self._reconcile(heads)
        attempt = uuid.uuid4().hex
        event("leading", "this replica migrates: %d revision(s) %s -> %s", len(pending),
              ", ".join(heads) or "base", self.target, pending=list(pending), attempt=attempt)
        began = time.monotonic()
        raced = False
        if self.command:
            self._run_command(attempt, heads, pending, self.command)
        else:
            tries = 0
            left: tuple[str, ...] | None = pending  # read under the lock a moment ago
            while True:
                try:
                    self._drop_invalid_indexes(attempt, left)
                    left = None  # a retry reads them again
                    self._run_alembic(attempt)
                    break
                except _Raced as race:
                    raced = True
                    _, left = self.pending.read(conn)
                    if not left:
                        break
                    if tries == RACE_RETRIES:
                        raise race.error from race.__cause__
                    tries += 1
                    event("race_retry", "%d revision(s) still pending (%s); running them once "
                          "the other runner's transaction is over", len(left), ", ".join(left),
                          level=logging.WARNING, pending=list(left))
                    time.sleep(RACE_PAUSE)
                except _LockWaited as blocked:
                    time.sleep(self._lock_wait_pause(blocked))
                attempt = uuid.uuid4().hex
        took = time.monotonic() - began
        heads_after, left = self.pending.read(conn)
        if left:
            raise MigrationError(
                f"the upgrade finished but {self.env.qualified_version_table!r} is still "
                f"behind by {', '.join(left)}; env.py may write another version table - pass "
                "--version-table/--version-table-schema", revision=left[0])
        applied = self.env.applied(heads_after) - self.env.applied(heads)
        if raced:  # only what this replica committed; the other runner did the rest
            applied &= set(self.committed)
        revisions = tuple(r for r in pending if r in applied)
        if raced and not revisions:
            event("raced_done", "a migration runner outside herd brought the database to %s "
                  "while this replica migrated; nothing left to do", ", ".join(heads_after),
                  level=logging.WARNING, heads=list(heads_after))
            return Outcome(action="waited", heads=heads_after, waited_seconds=waited + took,
                           leader=OUTSIDER, lock=lock.describe())
        event("migrated", "migrated %d revision(s) to %s in %s", len(revisions),
              ", ".join(heads_after), format_seconds(took), revisions=list(revisions),
              seconds=took)
        return Outcome(action="migrated", heads=heads_after, revisions=revisions,
                       migrate_seconds=took, waited_seconds=waited, lock=lock.describe())

    def _reconcile(self, heads: tuple[str, ...]) -> None:
        """Account for attempts a dead leader left ``running``, and refuse to go on where a
        database without transactional DDL may hold a half-applied revision."""
        history = self.history
        applied = self.env.applied(heads)
        transactional = self._transactional()
        if not transactional:
            for row in history.unresolved_failures():
                if row.revision not in applied and row.revision not in (ENV_PY, _command.ROW):
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
        # an attempt's rows were written in the order its revisions were to run (oldest
        # first here, History.plan): those in the version table committed; the first that is
        # not was in progress; the ones after it never started (their rows go). In one
        # transaction for all revisions none of them committed, and which one was running is
        # not recorded (its leader's output says).
        attempts: dict[str, list[Attempt]] = {}
        for row in unfinished:
            attempts.setdefault(row.attempt, []).append(row)
        for rows in attempts.values():
            shared = any(row.error == SHARED_TRANSACTION for row in rows)
            stopped: Attempt | None = None
            unstarted: list[Attempt] = []
            for row in rows:
                if row.revision == _command.ROW:
                    self._reconcile_command(row, transactional)
                elif row.revision in applied:
                    history.restate(row, "applied", "leader stopped before recording the end; "
                                    "the revision is in the version table")
                elif stopped is None:
                    stopped = row
                else:
                    unstarted.append(row)
            history.forget(unstarted)
            if stopped is None:
                continue
            if not transactional:
                raise IncompleteRevisionError(
                    f"revision {stopped.revision} was started by pid {stopped.pid} on host "
                    f"{stopped.host} at {stopped.started.isoformat(timespec='seconds')} and "
                    f"never finished; {self.dialect} DDL is not transactional, so the schema "
                    "may be partly changed. Inspect it, undo or complete the change (then "
                    f"'alembic stamp' if completed), and run 'herd resolve {stopped.revision}'",
                    revision=stopped.revision)
            if shared:
                history.restate(stopped, "interrupted", "leader stopped mid-migration (died or "
                                f"lost its connection) during an attempt of {len(rows)} "
                                "revision(s) in one transaction; the database rolled all of "
                                "them back (which one was running is in that leader's output)")
            else:
                history.restate(stopped, "interrupted", "leader stopped mid-migration (died or "
                                "lost its connection); the database rolled the revision back")
            for other in history.of_attempt(stopped.attempt):
                if other.status == "applied" and other.revision not in applied:
                    history.restate(other, "rolled back",
                                    "its transaction did not commit (leader stopped)")
        event("reconciled", "accounted for %d revision(s) a previous leader left running",
               len(unfinished), level=logging.WARNING)

    def _reconcile_command(self, row: Attempt, transactional: bool) -> None:
        """A leader died while its wrapped migration command ran (the command died with it:
        parent-death signal). What it applied is in the version table; without
        transactional DDL the revision it was running may be partly applied."""
        when = row.started.isoformat(timespec="seconds")
        if not transactional:
            raise IncompleteRevisionError(
                f"a migration command started by pid {row.pid} on host {row.host} at {when} "
                f"never finished; {self.dialect} DDL is not transactional, so the revision it "
                "was running may be partly applied. Inspect the schema ('herd status' shows "
                "where the version table is), undo or complete that revision, then run "
                f"'herd resolve {_command.ROW}'", revision=_command.ROW)
        self.history.restate(row, "interrupted", "leader stopped while its migration command "
                             "ran (died or lost its connection); the version table has what "
                             "the command committed")

    def _transactional(self) -> bool:
        if self.env.transactional_ddl is not None:
            return self.env.transactional_ddl
        from alembic.ddl.impl import DefaultImpl

        return bool(DefaultImpl.get_by_dialect(self.conn.dialect).transactional_ddl)

    def _run_alembic(self, attempt: str) -> None:
        env, lock, history, target = self.env, self.lock, self.history, self.target
        self._notified = False
        rows: list[Attempt] = []
        after_commit: list[Attempt] = []
        start_heads: tuple[str, ...] = ()
        per_step = True  # each revision commits on its own (else one transaction for all)
        herds_own: list[BaseException] = []  # what herd's own code raised, not a migration
        inside = [False]  # a revision's own code (or its commit) is running right now
        landed: set[str] = set()  # revisions whose own transaction committed (per step)
        last: list[str] = []  # the plan's last revision (one transaction: fenced holding)
        plans = [False]  # the attempt's rows were written before it started (History.plan)

        def fence(ctx: MigrationContext, step: Any, **_: Any) -> None:
            """Alembic's on_version_apply: the revision ran and the version table is updated,
            its transaction not yet committed. The lock's token is checked in it (one
            transaction: the row is held from the last revision on only, so that the
            lease's heartbeat is not kept waiting for the whole run)."""
            assert ctx.connection is not None
            try:
                final = [step.up_revision_id] == last
                lock.fence(ctx.connection, hold=per_step or final)
                if final and self.dialect == "postgresql":  # NOTIFY is delivered by the
                    notify(ctx.connection, lock.key)  # commit itself: no round trip after it
                    self._notified = True
                if per_step and history.one_writer and rows \
                        and rows[-1].revision == step.up_revision_id:
                    # SQLite: its 'applied' row commits with it (herd's own connection
                    # cannot write while this one holds the write transaction)
                    history.applied_in(ctx.connection, rows[-1])
            except LockLostError:
                raise
            except Exception as exc:  # herd's own check failed: not the migration's fault
                herds_own.append(exc)
                raise

        def steps(heads: tuple[str, ...], context: MigrationContext) -> Iterator[Any]:
            """The revisions for Alembic to run, with herd's bookkeeping between them. The
            revisions run in Alembic's loop, outside this generator: whatever is raised in
            here is herd's own (a lost lock, a failed attempt-log write, a bug), never the
            migration's failure."""
            try:
                yield from planned(heads, context)
            except Exception as exc:
                herds_own.append(exc)
                raise

        def planned(heads: tuple[str, ...], context: MigrationContext) -> Iterator[Any]:
            nonlocal start_heads, per_step
            self._check_same_target(context, self._session_facts(context, guard))
            # one transaction around every revision: nothing is committed until env.py's
            # transaction ends, so the last revision is logged 'applied' after that
            one_transaction = bool(context.impl.transactional_ddl
                                   and not context.opts.get("transaction_per_migration"))
            start_heads, per_step = tuple(heads), not one_transaction
            plan = list(env.script._upgrade_revs(target, heads))  # type: ignore[arg-type]
            # the lock's check rides on the attempt log's write where both use one session
            # (from the first write herd's tables take: they may appear only after the first
            # revision, see History.create_late)
            same_session = getattr(lock, "conn", None) is history.conn
            rides = lock.probe if same_session else ()
            carry = lock.guard if same_session and not rides else None
            last[:] = [plan[-1].revision.revision] if plan else []
            done: Attempt | None = None  # the revision just run, its row not yet 'applied'
            fenced = False  # the lock was checked after the last revision ran (below)
            # every revision's row is written before the first starts, and the outcome of
            # all of them in one statement at the end (History.plan): no revision costs a
            # write. SQLite writes each row as its revision lands (History.landed).
            plans[0] = not history.one_writer
            if plans[0] and plan:
                with shielded():
                    self._plan(attempt, [step.revision.revision for step in plan],
                               shared=one_transaction, probe=rides, guard=carry)
            for step in plan:
                script: Script = step.revision
                # fencing: never start a revision, nor record the one just run, without the
                # lock. A dead lock session is a lost lock (in one transaction all of it rolls
                # back), not a failed revision
                inside[0] = False
                if plans[0]:
                    with shielded():  # SIGTERM waits for the bookkeeping, then stops the run
                        lock.confirm()
                        row = history.advance(done, attempt, script.revision,
                                              uncommitted=one_transaction)
                        rows.append(row)
                        if done is not None:
                            self._note_applied(done)
                            if per_step:
                                self._wake()
                else:
                    with shielded():  # SIGTERM waits for the bookkeeping, then stops the run
                        probe = rides if not history.deferred else ()
                        carried = carry if not history.deferred else None
                        if not probe and carried is None:
                            lock.verify()
                        # one transaction for all: the revision just run stays 'running' in the
                        # table until the commit (it is 'applied' only once it is)
                        row = history.advance(done, attempt, script.revision,
                                              uncommitted=one_transaction, probe=probe,
                                              guard=carried)
                        if carried is not None and not history.guarded:  # wrote nothing
                            lock.verify()  # raises: the guard is the lock's own check
                            raise LockLostError(f"{lock.describe()}: the attempt log's write "
                                                "found the lock gone; stopped before the next "
                                                "revision - run herd again")
                        rows.append(row)
                        if probe:  # the lock checked by the same statement, before the revision
                            if history.probed is None:
                                lock.verify()
                            else:
                                lock.check(history.probed)
                        if done is not None:
                            self._note_applied(done)
                            if per_step:
                                self._wake()
                event("revision_start", "applying %s (%s)", script.revision,
                       (script.doc or "").strip().splitlines()[0] if script.doc else "",
                       revision=script.revision)
                guard.revision_starts(own_transaction=per_step)
                inside[0] = True
                yield step
                fenced = False
                if per_step:  # Alembic committed the step before asking for the next
                    landed.add(script.revision)
                    if history.one_writer:  # SQLite: its row is in the log before the next
                        with shielded():  # revision starts (see History.landed)
                            history.landed(row)
                if history.late:  # the first revision ran (per step: and committed); its
                    # own emptiness check is behind it: herd's tables may appear now. Its
                    # row goes in 'applied' when it committed on its own, and the insert
                    # carries the lock's check (the one after the last revision, below)
                    with shielded():
                        history.commit_point(landed=row if per_step else None, probe=rides,
                                             guard=carry)
                        fenced = self._written_under_lock("stopped")
                done = row
            inside[0] = False
            if done is None:
                return
            if per_step:  # the last revision committed: the database is at the target
                self._wake(final=True)
            with shielded():
                if not fenced:  # one transaction: raising here rolls all of it back
                    lock.verify()
                if one_transaction:  # committed only when env.py's transaction ends
                    after_commit.append(done)
                elif plans[0]:  # recorded with the others, in one statement (below)
                    history.finish(done, "applied", write=False)
                    self._note_applied(done)
                else:
                    self._applied(done)

        ctx, self._captured = capturing_context(env.config, env.script, fn=steps,
                                                as_sql=False, destination_rev=target,
                                                on_version_apply=fence)
        guard = _lockwait.Guard(self.lock_wait, self._retries.timeout, self.conn.engine,
                                self.url)
        try:
            with preserved_logging(), ctx:
                try:
                    env.script.run_env()
                finally:
                    guard.close()
        except LockLostError:
            with shielded():
                self._record_lost(rows, landed, mid_revision=inside[0])
            raise
        except HerdError:
            self._record_failure(rows, "stopped by herd")
            raise
        except Interrupted as stop:  # the transaction of the revision in progress rolled back
            with shielded():
                self._record_stop(rows, stop, mid_revision=inside[0])
            raise
        except Exception as exc:
            if self.lock_wait.on and _lockwait.is_lock_timeout(exc) and rows:
                raise self._lock_waited(exc, rows, guard) from exc
            if isinstance(exc, DBAPIError) and is_transient(exc):
                raise self._connection_lost(exc, rows) from exc
            lost = self._lost_lock()
            if lost is not None:  # e.g. the version table moved under a paused leader
                with shielded():
                    self._record_lost(rows, landed, mid_revision=inside[0])
                raise lost from exc
            if any(exc is own for own in herds_own):  # herd's bug: not the migration's fault
                self._record_interrupted(
                    rows, f"herd internal error: {describe_error(exc, self.url)}")
                raise
            if _race_signature(exc) and self._transactional():
                moved = self._moved(start_heads, rows if per_step else [])
                if moved:
                    raise self._raced(exc, rows, moved, per_step) from exc
            error = describe_error(exc, self.url)
            if rows:
                failed = self._record_failure(rows, error)
            else:
                failed = None
                self._record_env_py(attempt, error)
            where = f"revision {failed}" if failed else "env.py (before any revision ran)"
            first = _headline(error) or type(exc).__name__
            if isinstance(exc, SyntaxError):  # its headline is the source excerpt's place
                first = f"SyntaxError in {exc.filename} line {exc.lineno}: {exc.msg}"
            if failed and not self._transactional():
                advice = (f"{self.dialect} DDL is not transactional, so {failed} may be partly "
                          "applied: inspect the schema, undo the partial change, then 'herd "
                          f"resolve {failed}' and redeploy the fixed migration")
            elif failed:
                advice = ("nothing after it was applied - fix the migration and redeploy "
                          "('herd history' has the details)")
            elif "outside of application context" in error.lower():  # Flask-Migrate
                advice = ("nothing was applied and no migration needs fixing - this env.py "
                          "needs the Flask application: run its own command under herd's lock "
                          "('herd migrate -- flask db upgrade', or 'herd run --migrate-command "
                          "\"flask db upgrade\" -- APP'), or call alembic_herd.upgrade() inside "
                          "app.app_context() (docs/adopting.md)")
            else:
                advice = ("nothing was applied - fix env.py (or what it imports and reads) "
                          "and redeploy ('herd history' has the details)")
            raise MigrationError(f"{where} failed: {first}; {advice}", revision=failed) from exc
        if after_commit:  # env.py's transaction has committed: the database is at the
            self._wake(final=True)  # target; waiters verify it while this one logs it
        if after_commit and history.late:
            history.commit_point()
        for row in after_commit:  # now every revision of it is 'applied', in one statement
            # (the runner notifies once the lock is free)
            history.finish(row, "applied", write=False)
            self._note_applied(row)
        history.write([r for r in rows if r.status == "applied"])
        history.flush()

    def _plan(self, attempt: str, revisions: list[str], *, shared: bool,
              probe: tuple[Any, ...], guard: Any) -> None:
        """Write the attempt's rows before its first revision (:meth:`History.plan`); the
        first row's insert carries the lock's check where it can."""
        history = self.history
        deferred = history.deferred
        history.plan(attempt, revisions, shared=shared, probe=() if deferred else probe,
                     guard=None if deferred else guard)
        self._written_under_lock("stopped before the first revision")

    def _written_under_lock(self, stopped: str) -> bool:
        """Judge the lock's check that the attempt log's last write carried (its probe's
        values, or whether its guard held): raise ``LockLostError`` when the lock is gone;
        ``True`` when the write checked it (then :meth:`Lock.confirm` may wait)."""
        history, lock = self.history, self.lock
        if history.guarded is False:  # wrote nothing
            lock.verify()  # raises: the guard is the lock's own check
            raise LockLostError(f"{lock.describe()}: the attempt log's write found the lock "
                                f"gone; {stopped} - run herd again")
        if history.probed is not None:
            lock.check(history.probed)
        checked = bool(history.guarded) or history.probed is not None
        if checked:
            lock.confirmed()
        return checked

    def _lock_waited(self, exc: Exception, rows: list[Attempt], guard: _lockwait.Guard
                     ) -> Exception:
        """A statement of the revision in progress timed out waiting for a lock. When all
        of the revision's work rolled back, record it 'rolled back' (naming the blocker) and
        let :meth:`run` try again; when part of it committed (an autocommit block, DDL
        without transactions), the revision failed: never retried blindly."""
        retries, blocker = self._retries, guard.blocker()
        waited = retries.timeout
        running = next((r for r in rows if r.status == "running"), rows[-1])
        if guard.committed:
            error = describe_error(exc, self.url)
            failed = self._record_failure(
                rows, f"{error}\n{_lockwait.blocked_by(blocker)}; part of the revision had "
                "committed, so it was not retried")
            done = " ".join(guard.committed.split())[:100]
            revision = failed or running.revision
            then = "" if guard.transactional else f", then 'herd resolve {revision}'"
            return MigrationError(
                f"revision {revision} timed out waiting for a lock "
                f"({_lockwait.blocked_by(blocker)}) after part of it had committed "
                f"({mask_text(done, self.url)!r}), so herd does not retry it: inspect the "
                f"schema and undo or complete that part{then}, and redeploy",
                revision=revision)
        note = _lockwait.note(retries.attempt, self.lock_wait.attempts, waited, blocker)
        try:
            applied = self.env.applied(read_heads(self.conn, self.env))
            for row in rows:
                if row.status == "running":
                    self.history.finish(row, "rolled back", note)
            self._roll_back(rows, applied, f"its transaction rolled back: {note}")
            self.committed = [r for r in self.committed if r in applied]
        except SQLAlchemyError as lost:
            log.warning("could not record the lock wait in the attempt log: %s",
                        driver_message(lost, self.url))
        return _LockWaited(running, waited, blocker)

    def _lock_wait_pause(self, blocked: _LockWaited) -> float:
        """The pause before the next attempt; gives up (``blocked``'s row 'blocked') when
        the attempts or the budget are spent."""
        retries, row = self._retries, blocked.row
        revision = row.revision
        attempt = retries.attempt
        pause = retries.next()
        who = _lockwait.blocked_by(blocked.blocker)
        if pause is None:
            spent = format_seconds(retries.spent())
            with suppress(SQLAlchemyError):
                self.history.restate(row, "blocked", f"gave up after {attempt} lock wait "
                                     f"timeout(s) in {spent}: {who}")
            raise LockWaitError(
                f"revision {revision} timed out waiting for a lock {attempt} time(s) in "
                f"{spent} ({who}); nothing of it was applied - end the blocking transaction "
                "and redeploy, or raise --lock-wait-attempts / --lock-wait-budget",
                revision=revision)
        event("lock_wait", "revision %s waited %s for a lock (attempt %d of %d), %s; rolled "
              "back, trying again in %s with %s", revision, format_seconds(blocked.waited),
              attempt, self.lock_wait.attempts, who, format_seconds(pause),
              format_seconds(retries.timeout), level=logging.WARNING, revision=revision,
              attempt=attempt, attempts=self.lock_wait.attempts, blocker=blocked.blocker,
              pause=pause)
        return pause

    def _drop_invalid_indexes(self, attempt: str, left: tuple[str, ...] | None) -> None:
        """PostgreSQL: before running revisions whose last attempt did not apply (a retry, or
        the leader after a failure, a kill or a signal), drop the INVALID indexes that a
        CREATE INDEX CONCURRENTLY of theirs left behind, so that it builds afresh instead of
        failing on 'already exists'."""
        if self.dialect != "postgresql":
            return
        if left is None:
            _, left = self.pending.read(self.conn)
        t = self.history.table
        tried = self.history.rows(where=[t.c.revision.in_(left), t.c.status.in_(
            ("failed", "interrupted", "rolled back", "blocked"))]) if left else []
        if not tried:
            return
        scripts = {self.env.script.get_revision(r.revision) for r in tried} - {None}
        sources = [Path(script.path).read_text(errors="replace") for script in scripts
                   if script is not None]
        timeout = self._retries.timeout if self.lock_wait.on else 0.0
        try:
            dropped = _lockwait.drop_invalid_indexes(self.conn, sources, timeout)
        except DBAPIError as exc:
            if not _lockwait.is_lock_timeout(exc):
                raise
            row = self.history.start(attempt, tried[0].revision)
            note = _lockwait.note(self._retries.attempt, self.lock_wait.attempts, timeout, None)
            self.history.finish(row, "rolled back", f"{note} (dropping its INVALID index)")
            raise _LockWaited(row, timeout, None) from exc
        for index in dropped:
            event("invalid_index", "dropped INVALID index %s, left by a CREATE INDEX "
                  "CONCURRENTLY of an attempt that did not apply; building it again", index,
                  level=logging.WARNING, index=index)

    def _applied(self, row: Attempt) -> None:
        """The last revision committed on its own (the waiters were notified just before)."""
        self.history.finish(row, "applied")
        self._note_applied(row)

    def _wake(self, *, final: bool = False) -> None:
        """Notify the waiters that a revision committed: an intermediate one at most every
        NOTIFY_EVERY s (a waiter for an earlier target sees it), the last one of the plan
        (``final``) at once, as soon as it committed. The waiters then verify the heads and
        return while this replica still writes its attempt log and releases the lock (the
        runner notifies once more when the lock is free: a failure, or the lock's waiters).
        Never raises: notification only accelerates, waiters also poll."""
        if final and self._notified:  # the last revision's transaction carried it
            return
        if final or time.monotonic() >= self._next_wake:
            with suppress(SQLAlchemyError):
                notify(self.conn, self.lock.key)
            self._next_wake = time.monotonic() + NOTIFY_EVERY

    def _note_applied(self, row: Attempt) -> None:
        self.committed.append(row.revision)
        event("revision_done", "applied %s in %s", row.revision,
               format_seconds(row.duration or 0.0), revision=row.revision, seconds=row.duration)

    def _connection_lost(self, exc: DBAPIError, rows: list[Attempt]) -> DatabaseUnavailableError:
        """A connection failed mid-migration (server restart, network drop). Nothing is
        written to the attempt log: a revision left ``running`` is accounted for by the next
        leader, which knows whether the database rolled it back."""
        running = next((r.revision for r in rows if r.status == "running"), None)
        if running is None:
            return DatabaseUnavailableError(
                f"lost the connection to database {display(self.url)!r} before any revision "
                f"ran: {driver_message(exc, self.url)}; check the URL env.py uses")
        if self._transactional_guess():
            what = "its transaction was not committed"
        else:
            what = (f"{self.dialect} DDL is not transactional, so it may be partly applied "
                    "and the next leader stops on it")
        return DatabaseUnavailableError(
            f"lost the connection to database {display(self.url)!r} during revision "
            f"{running}: {driver_message(exc, self.url)}; {what}")

    def _transactional_guess(self) -> bool:
        """Transactional DDL, without a round trip (the connection may be gone)."""
        if self.env.transactional_ddl is not None:
            return self.env.transactional_ddl
        return self.dialect in ("postgresql", "sqlite")

    def _moved(self, start: tuple[str, ...], mine: list[Attempt]) -> set[str]:
        """Revisions that appeared in the version table while this replica migrated and
        that it did not commit itself: another runner's work. Waits a little for it (its
        transaction may commit just after the collision)."""
        before = self.env.applied(start) | {r.revision for r in mine if r.status == "applied"}
        until = time.monotonic() + RACE_GRACE
        while True:
            try:
                moved = self.env.applied(read_heads(self.conn, self.env)) - before
            except SQLAlchemyError:
                return set()
            if moved or time.monotonic() >= until:
                return set(moved)
            time.sleep(0.25)

    def _raced(self, exc: Exception, rows: list[Attempt], moved: set[str],
               per_step: bool) -> _Raced:
        """Another migration runner (plain ``alembic upgrade``, not herd) changed the database
        under this replica: record what became of this attempt and let :meth:`run`
        re-check the heads."""
        history = self.history
        first = _headline(describe_error(exc, self.url)) or type(exc).__name__
        note = f"collided with a migration runner outside herd ({first})"
        try:
            for row in rows:
                if row.status == "running":
                    history.finish(row, "rolled back", note)
                elif row.status == "applied" and not per_step:
                    history.restate(row, "rolled back", f"its transaction rolled back: {note}")
                    if row.revision in self.committed:
                        self.committed.remove(row.revision)
            history.write(rows)
            history.flush()
        except SQLAlchemyError as lost:
            log.warning("could not record the collision in the attempt log: %s",
                        driver_message(lost, self.url))
        event("raced", "another migration runner (not herd) applied %s while this replica "
               "migrated (%s); its work is kept, this replica's rolled back",
               ", ".join(sorted(moved)), first, level=logging.WARNING, moved=sorted(moved))
        error = MigrationError(
            f"a migration runner outside herd kept changing {self.env.qualified_version_table!r} "
            f"while this replica migrated ({first}); run every replica through herd",
            revision=next((r.revision for r in rows if r.status == "rolled back"), None))
        return _Raced(error)

    def _record_failure(self, rows: list[Attempt], error: str) -> str | None:
        """The migration raised: its running revision 'failed'; returns that revision."""
        history = self.history
        failed = None
        try:
            applied = self.env.applied(read_heads(self.conn, self.env))
            for row in rows:
                if row.status == "running" and row.revision in applied:  # e.g. a wrapped
                    history.finish(row, "applied")  # command committed it before it failed
                elif row.status == "running":
                    history.finish(row, "failed", error)
                    failed = row.revision
            self._roll_back(rows, applied, f"its transaction rolled back after "
                            f"{failed or 'an error'} failed")
        except SQLAlchemyError as exc:  # connection gone (or invalidated, awaiting a
            # rollback): never mask the real error; the next leader reconciles
            log.warning("could not record the failure in the attempt log: %s",
                        driver_message(exc, self.url))
        return failed

    def _lost_lock(self) -> LockLostError | None:
        """After a migration error: the lock lost meanwhile, if it was (then the error is
        the new leader's work colliding with this one's, not the migration's failure)."""
        try:
            self.lock.verify()
        except LockLostError as lost:
            return lost
        except SQLAlchemyError:
            return None
        return None

    def _record_lost(self, rows: list[Attempt], landed: set[str], *,
                     mid_revision: bool) -> None:
        """The lock was lost: a revision whose transaction committed (``landed``) is
        'applied', the one in progress 'interrupted' (its transaction rolled back), one that
        only waited for a shared commit 'rolled back'. On a database without transactional
        DDL the one in progress (``mid_revision``: its code ran up to the fence) may be
        partly applied: it is 'failed', and every replica stops on it until 'herd resolve',
        as the replica that took the lock over already did (it found it 'running')."""
        note = "the lock was lost (expired or taken over); its transaction rolled back"
        if mid_revision and not self._transactional_guess():
            partly = (f"the lock was lost (expired or taken over) inside the revision; "
                      f"{self.dialect} DDL is not transactional, so it may be partly applied")
            with suppress(SQLAlchemyError):  # as below: the next leader reconciles
                for row in rows:
                    if row.status == "running" and row.revision not in landed:
                        self.history.finish(row, "failed", partly)
        self._record_interrupted(rows, note, landed=landed, why=note)
        event("lock_lost", "lost %s while migrating; stopped, another replica carries on",
              self.lock.describe(), level=logging.ERROR,
              revision=rows[-1].revision if rows else None)

    def _record_env_py(self, attempt: str, error: str) -> None:
        """env.py failed before any revision ran: one ``failed`` row for env.py, so that the
        waiters report it at once instead of waiting out their timeout."""
        try:
            self.history.finish(self.history.start(attempt, ENV_PY), "failed", error)
            self.history.flush()
        except SQLAlchemyError as exc:
            log.warning("could not record env.py's failure in the attempt log: %s",
                        driver_message(exc, self.url))

    def _record_stop(self, rows: list[Attempt], stop: Interrupted, *, mid_revision: bool
                     ) -> None:
        """A signal stopped the run. Between two revisions, or inside one on a database with
        transactional DDL (rolled back), the revision is 'interrupted'; inside one without
        transactional DDL it may be partly applied, so it is 'failed' and blocks the next
        leader until 'herd resolve'."""
        revision = rows[-1].revision if rows else None
        if mid_revision and not self._transactional_guess():
            self._record_failure(rows, f"stopped by {stop.name} inside the revision; "
                                 f"{self.dialect} DDL is not transactional, so it may be "
                                 "partly applied")
            stop.detail = (f"during revision {revision}: {self.dialect} DDL is not "
                           "transactional, so it may be partly applied - inspect it, then "
                           f"'herd resolve {revision}'")
        else:
            self._record_interrupted(rows, f"stopped by {stop.name}; its transaction rolled "
                                     "back" if mid_revision else f"stopped by {stop.name}")
            if rows and rows[-1].status == "applied":  # stopped just after its commit
                stop.detail = f"after revision {revision} committed; the next replica carries on"
            elif revision:
                stop.detail = (f"during revision {revision}: rolled back, nothing of it "
                               "applied; the next replica carries on")
        event("stopped", "%s: stopped the migration%s; releasing the lock", stop.name,
              f" during {revision}" if revision else "", level=logging.WARNING,
              signal=stop.name, revision=revision)

    def _record_interrupted(self, rows: list[Attempt], error: str, *,
                            landed: set[str] | None = None, why: str | None = None) -> None:
        """The run stopped between two revisions or its transaction rolled back, so no
        revision failed: one that committed (``landed``, else what the version table has)
        is 'applied', the one in progress 'interrupted', one that only waited for a shared
        commit 'rolled back' (``why``)."""
        history = self.history
        try:
            applied = (landed if landed is not None
                       else self.env.applied(read_heads(self.conn, self.env)))
            for row in rows:
                if row.status == "running":
                    if row.revision in applied:
                        history.finish(row, "applied")
                    else:
                        history.finish(row, "interrupted", error)
            self._roll_back(rows, applied, why or f"its transaction rolled back after {error}")
        except SQLAlchemyError as lost:
            log.warning("could not record the interruption in the attempt log: %s",
                        driver_message(lost, self.url))

    def _roll_back(self, rows: list[Attempt], applied: set[str], why: str) -> None:
        """Rows 'applied' whose revision is not in the version table (``applied``): their
        transaction rolled back. Then write what is buffered."""
        for row in rows:
            if row.status == "applied" and row.revision not in applied:
                self.history.restate(row, "rolled back", why)
        self.history.write(rows)  # what the attempt's rows say in memory only (History.plan)
        self.history.flush()

    def _session_facts(self, context: MigrationContext, guard: _lockwait.Guard
                       ) -> dict[str, Any]:
        """On env.py's migration session, in one statement (the lock-wait timeouts'
        statement, when it is sent): PostgreSQL's server keepalives (see
        :data:`~._database.SERVER_KEEPALIVES`: have the server drop a leader cut off from the
        network, like herd's lock session, instead of keeping its transaction and the locks
        its DDL holds for hours), and what :meth:`_check_same_target` compares: where a bare
        version-table name leads on it, the server's identity."""
        conn = context.connection
        if conn is None or context.as_sql:
            return {}
        dialect = conn.dialect.name
        columns: dict[str, str] = {}
        params: dict[str, Any] = {}
        if dialect == "postgresql":
            columns["keepalives"] = SERVER_KEEPALIVES
        where = effective_schema_column(dialect)
        if where is not None and context.version_table_schema is None:
            columns["schema"] = where
            params["herd_vt"] = context.version_table
        if self._captured is not None and self._captured.connection is conn:
            for i, column in enumerate(SERVER_IDENTITY.get(dialect, ())):
                columns[f"server_{i}"] = column
        values = guard.attach(context, also=list(columns.values()), params=params)
        if values is None and columns:  # no lock-wait statement: one of their own
            values = tuple(conn.execute(sa.text("SELECT " + ", ".join(columns.values())),
                                        params).one())
        return dict(zip(columns, values or (), strict=True))

    def _check_same_target(self, context: MigrationContext, facts: dict[str, Any]) -> None:
        """Refuse to migrate when env.py's version table or database is not the one herd
        locked and watches: waiters would never see the result. ``facts``: what
        :meth:`_session_facts` read on env.py's session."""
        env = self.env
        seen = (env.same_location(context, facts["schema"]) if "schema" in facts
                else env.same_location(context))
        if seen is not None:
            raise ConfigurationError(
                f"env.py uses version table {seen.describe()!r} but herd watches "
                f"{env.qualified_version_table!r} (learnt before the lock); if env.py chooses "
                "its version table per run, make the choice the same in every run, or pass "
                "--version-table/--version-table-schema")
        captured = self._captured
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
        if conn is None:
            return
        theirs = (_identity_of(facts) if "server_0" in facts
                  else _server_identity(conn))
        ours = (_identity_of(self.lock.seen) if "server_0" in self.lock.seen
                else _server_identity(self.conn))
        if theirs is not None and ours is not None and theirs != ours:
            raise ConfigurationError(
                f"env.py migrates {display(conn.engine.url)!r} but herd's lock and reads are "
                f"on another server ({display(self.conn.engine.url)!r}); point --lock-url at "
                "the server --url reaches (a direct connection past the pooler), or drop it")
        if theirs is None and not _same_server(conn.engine.url, self.url):
            log.warning("env.py connects to %s, herd to %s: make sure both name one server",
                        display(conn.engine.url), display(self.url))

    def _run_command(self, attempt: str, heads: tuple[str, ...], pending: tuple[str, ...],
                     command: Sequence[str]) -> None:
        """Run the user's migration command under the lock (see :mod:`._command`: its own
        process group, signals forwarded, never outliving this call) and record what it did:
        one row for the command (masked, with how it ended, its last stderr lines and its
        whole duration), and one ``applied`` row, without a duration, for each revision the
        version table gained (``heads`` before, the version table after). Revisions it did
        not reach get no row (the command row names them), except on a database without
        transactional DDL, where the first of them may be partly applied: it is ``failed``,
        and the next leader stops on it until ``herd resolve``."""
        history = self.history
        row = history.start(attempt, _command.ROW)
        event("command", "running %s while holding the lock",
              mask_text(_command.shell_words(command), self.url))
        try:
            done = _command.run(command, env={**os.environ, "HERD_LOCK_HELD": "1"})
        except FileNotFoundError as exc:
            self._record_command(row, heads, pending, command, ending="not found")
            raise ConfigurationError(
                f"migration command {command[0]!r} not found; check the command after '--' "
                "(or --migrate-command) and PATH") from exc
        except Interrupted as stop:
            with shielded():
                report = self._record_command(row, heads, pending, command,
                                              ending=f"stopped by {stop.name}")
                if report is not None and report.left and not self._transactional_guess():
                    first = report.left[0]
                    stop.detail = (f"while the migration command ran: {first} may be partly "
                                   f"applied ({self.dialect} DDL is not transactional) - "
                                   f"inspect it, then 'herd resolve {first}'")
                else:
                    stop.detail = "while the migration command ran; the next replica carries on"
                event("stopped", "%s: stopped the migration command; releasing the lock",
                      stop.name, level=logging.WARNING, signal=stop.name, revision=None)
            raise
        ending = f"exited {done.returncode}"
        report = self._record_command(row, heads, pending, command, ending=ending,
                                      seconds=done.seconds, tail=done.stderr_tail)
        where = ("" if report is None else "; " + report.summary().partition("; ")[2])
        first = mask_text(_command.headline(done.stderr_tail), self.url)
        if done.returncode != 0:
            raise CommandFailedError(
                f"migration command {mask_text(_command.shell_words(command), self.url)!r} "
                f"{ending}" + (f" ({first})" if first else "") + where
                + "; its output is above", returncode=done.returncode)
        if report is not None and report.left:
            raise MigrationError(
                f"migration command {mask_text(_command.shell_words(command), self.url)!r} "
                f"exited 0 but {self.env.qualified_version_table!r} is still behind{where}; "
                "the command may migrate another database or version table - give herd the "
                "same URL (--url) and --version-table/--version-table-schema",
                revision=report.left[0])

    def _record_command(self, row: Attempt, heads: tuple[str, ...], pending: tuple[str, ...],
                        command: Sequence[str], *, ending: str, seconds: float | None = None,
                        tail: Sequence[str] = ()) -> _command.Report | None:
        """Finish the command's row and add rows for what the version table gained (see
        :meth:`_run_command`); ``None`` when the attempt log could not be written."""
        history, env = self.history, self.env
        try:
            now = env.applied(read_heads(self.conn, env))
            gained = now - env.applied(heads)
            applied = [r for r in pending if r in gained] + sorted(gained - set(pending))
            left = [r for r in pending if r not in now]
            report = _command.Report(command, ending, seconds, tail, applied, left, self.url)
            ok = ending == "exited 0" and not left
            history.finish(row, "applied" if ok else
                           "interrupted" if ending.startswith("stopped") else "failed",
                           report.text())
            for revision in applied:
                history.add(row.attempt, revision, "applied", started=row.started,
                            finished=row.finished or row.started,
                            error=f"{BY_COMMAND} (timed on its {_command.ROW!r} row)")
                self.committed.append(revision)
            if left and not ok and not self._transactional():
                history.add(row.attempt, left[0], "failed", started=row.started,
                            finished=row.finished or row.started,
                            error=f"{NEXT_OF_COMMAND} ({ending}); {self.dialect} DDL "
                                  "is not transactional, so it may be "
                                  "partly applied: inspect it, undo or complete it, then "
                                  f"'herd resolve {left[0]}'")
            history.flush()
        except SQLAlchemyError as exc:  # never mask the command's own result
            log.warning("could not record the migration command in the attempt log: %s",
                        driver_message(exc, self.url))
            return None
        return report


def _headline(error: str | None) -> str:
    """The line of a :func:`describe_error` text that says what failed: the first unindented
    line (a SQLAlchemy error's first line, before its [SQL: ...] and Background link; a
    SyntaxError's last line, after the indented source excerpt)."""
    lines = [line.strip() for line in (error or "").splitlines()
             if line.strip() and not line[0].isspace()
             and not line.startswith(("[SQL:", "[parameters:", "(Background on this error"))]
    return lines[0] if lines else (error or "").strip()


def leader_failed(row: Attempt) -> LeaderFailedError:
    """The error a replica reports when the leader it waited for failed on ``row``."""
    first = _headline(row.error) or "no error recorded"
    if row.status == "blocked":
        return LeaderFailedError(
            f"the replica that migrated (pid {row.pid} on host {row.host}) gave up on revision "
            f"{row.revision} at {(row.finished or row.started).isoformat(timespec='seconds')}: "
            f"{first}; nothing of it was applied - end the blocking transaction and redeploy",
            revision=row.revision, host=row.host, pid=row.pid, at=row.finished, error=row.error)
    if row.revision == _command.ROW:
        summary = (row.error or "").strip().splitlines()[-1:] or ["no error recorded"]
        return LeaderFailedError(
            f"the replica that migrated (pid {row.pid} on host {row.host}) ran its migration "
            f"command, which failed at "
            f"{(row.finished or row.started).isoformat(timespec='seconds')}: {summary[0]}; fix "
            "the migration and redeploy ('herd history --json' has the command and its last "
            "stderr lines)",
            revision=row.revision, host=row.host, pid=row.pid, at=row.finished, error=row.error)
    where = ("in env.py before any revision ran" if row.revision == ENV_PY
             else f"on revision {row.revision}")
    return LeaderFailedError(
        f"the replica that migrated (pid {row.pid} on host {row.host}) failed {where} "
        f"at {(row.finished or row.started).isoformat(timespec='seconds')}: "
        f"{first}; fix {'env.py' if row.revision == ENV_PY else 'the migration'} and "
        "redeploy ('herd history' has the details)",
        revision=row.revision, host=row.host, pid=row.pid, at=row.finished, error=row.error)


def _same_database(a: URL, b: URL) -> bool:
    """Same backend and database name (hosts may be spelt differently: localhost, an IP)."""
    a, b = sync_url(a), sync_url(b)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return os.path.realpath(a.database or "") == os.path.realpath(b.database or "")
    return a.database == b.database


SERVER_IDENTITY = {
    "postgresql": ("pg_postmaster_start_time()", "current_setting('port')"),
    "mysql": ("@@hostname", "@@port"),
    "mariadb": ("@@hostname", "@@port"),
}
"""What tells two database servers apart, while two sessions on one server (one through
a pooler) agree on it: PostgreSQL's start time and port, MySQL's host name and port."""


def _server_identity(conn: Connection) -> tuple[object, ...] | None:
    """:data:`SERVER_IDENTITY` read on ``conn``; ``None`` on SQLite."""
    columns = SERVER_IDENTITY.get(conn.dialect.name)
    if columns is None:
        return None
    return tuple(conn.execute(sa.text("SELECT " + ", ".join(columns))).one())


def _identity_of(values: dict[str, Any]) -> tuple[object, ...]:
    """The server identity among values read with :data:`SERVER_IDENTITY`'s columns."""
    return tuple(values[f"server_{i}"] for i in range(2))


def want_under_lock(lock: Lock, history: History, dialect: str) -> None:
    """What the leader asks first once it holds the lock, read by the lock's own claim
    (:attr:`~alembic_herd.locks.Lock.also`), no round trip of its own: whether the attempt
    log exists, whether herd could create its tables (PostgreSQL, see
    :func:`_may_create`), and the server's identity (see :meth:`Leader._check_same_target`).
    Read after the take, under the lock: nobody else creates the log meanwhile."""
    lock.want("log", exists_column(dialect, history.table, "herd_log"))
    for i, column in enumerate(SERVER_IDENTITY.get(dialect, ())):
        lock.want(f"server_{i}", (column, {}))
    if dialect == "postgresql":
        schema = history.table.schema
        if schema is None:
            lock.want("create", ("has_schema_privilege(current_schema(), 'CREATE')", {}))
            lock.want("create_in", ("current_schema()", {}))
        else:  # a schema still to be created (by env.py, the first revision): see below
            lock.want("create", (
                "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = "
                ":herd_create_s) THEN has_schema_privilege(CAST(:herd_create_s AS text), "
                "'CREATE') ELSE TRUE END", {"herd_create_s": schema}))
            lock.want("create_in", ("CAST(:herd_create_s AS text)", {"herd_create_s": schema}))


def _same_server(a: URL, b: URL) -> bool:
    return (a.host, a.port, a.query.get("host")) == (b.host, b.port, b.query.get("host"))


def _eager_tables() -> bool:
    """Tests only (controls, and fault trials that need the log from the start): create
    herd's tables before the migration runs, as herd did before it kept its rows in memory
    until the first commit. Read per run, not at import: a test sets it for one test."""
    return os.environ.get("HERD_TEST_EAGER_TABLES") == "1"


def _herds_tables(leader: Leader, scripts: list[Any], *,
                  log_exists: bool = False) -> Callable[[], None]:
    """Create herd's attempt log and record the revision graph (now, or at the first
    commit); a refused privilege is one line naming the GRANT."""
    history, conn = leader.history, leader.conn

    def create() -> None:
        try:
            absent = history.absent  # the log was missing a moment ago: its graph too
            name = qualified(history.table.schema, history.table.name)
            if not log_exists:  # the log and the graph together (one round trip where
                # the database allows)
                history.ensure(also=[graph_beside(name)])
            record_graph(conn, leader.env.qualified_version_table, scripts,
                         history_table=name, absent=absent and not log_exists,
                         created=not log_exists)
        except DBAPIError as exc:  # e.g. no CREATE on the schema
            if is_transient(exc):
                raise unavailable(exc, leader.url) from exc
            grant = grant_to_create(conn, history.table.schema) if denied(exc) else None
            if grant is not None:
                raise PrivilegeError(
                    f"could not create herd's attempt log {history.table.fullname!r} or its "
                    f"revision graph {GRAPH_TABLE!r}: {driver_message(exc, leader.url)}; run: "
                    f"{grant} (or put herd's tables where this user may create them: "
                    "--herd-schema)") from exc
            raise MigrationError(
                f"could not create herd's attempt log {history.table.fullname!r} or its "
                f"revision graph {GRAPH_TABLE!r}: "
                f"{driver_message(exc, leader.url)}; the migrating user needs the right to "
                "create tables there (Alembic creates its version table and yours too)"
            ) from exc

    return create


def _may_create(conn: Connection, schema: str | None, url: URL, *,
                known: tuple[Any, Any] | None = None) -> None:
    """Refuse before migrating when herd could not create its tables in ``schema`` after
    the first revision (they appear only then): PostgreSQL asks the server; MySQL/MariaDB
    checks that another database named by --herd-schema is visible to this user (the
    default, the version table's database, is one the migrating user creates tables in)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        if schema is None or schema == url.database:
            return
        visible = conn.scalar(sa.text(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"),
            {"s": schema})
        if not visible:
            raise PrivilegeError(
                f"database {schema!r} for herd's tables does not exist or this database user "
                f"has no privilege on it; create it and run: {grant_to_create(conn, schema)} "
                "(or leave out --herd-schema: herd's tables then go beside the version table)")
        return
    if conn.dialect.name != "postgresql":
        return
    if known is not None:  # read with the lock's take (want_under_lock)
        allowed, name = known
    else:
        where = sa.func.coalesce(sa.literal(schema) if schema else None,
                                 sa.func.current_schema())
        query = sa.select(sa.func.has_schema_privilege(where, "CREATE"), where)
        if schema is not None:
            exists = conn.scalar(sa.select(sa.func.count()).select_from(
                sa.table("pg_namespace", sa.column("nspname"))).where(
                sa.column("nspname") == schema))
            if not exists:  # env.py or the first revision creates it (the version table's
                # schema, e.g. CREATE SCHEMA IF NOT EXISTS in env.py): herd's tables come
                # after the first revision, and creating them then names the schema if it
                # is missing
                return
        allowed, name = conn.execute(query).one()
    if not allowed:
        raise PrivilegeError(
            f"this database user may not create herd's tables in schema {name!r} (they "
            f"appear after the first revision commits); run: {grant_to_create(conn, name)} "
            "(or name a schema it may create in with --herd-schema)")
