"""The leader: migrate under the lock, with fencing and an attempt log."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from alembic.runtime.migration import MigrationContext
from alembic.script.base import Script
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ._database import display, driver_message, is_transient, mask_text, sync_url, unavailable
from ._durations import format_seconds
from ._environment import Captured, Environment, capturing_context, preserve_logging
from ._heads import read_heads
from ._history import Attempt, History, describe_error
from ._log import event, log
from ._outcome import Outcome
from .errors import (
    CommandFailedError,
    ConfigurationError,
    DatabaseUnavailableError,
    HerdError,
    IncompleteRevisionError,
    LeaderFailedError,
    MigrationError,
)
from .locks import Lock


class Leading:
    """The leader's half of the runner: re-check under the lock, account for earlier
    attempts, run the migration with fencing, and record every revision."""

    if TYPE_CHECKING:
        env: Environment
        url: URL
        dialect: str
        _captured: Captured

        def _pending(self, conn: Connection, target: str
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]: ...

        def _outcome(self, action: str, heads: tuple[str, ...], **kw: Any) -> Outcome: ...

    def lead(self, conn: Connection, lock: Lock, history: History, target: str, *,
             baseline: int, waited: float, command: Sequence[str] | None) -> Outcome:
        heads, pending = self._pending(conn, target)
        if not pending:
            event("current_after_lock", "database became current at %s while waiting; "
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
        event("leading", "this replica migrates: %d revision(s) %s -> %s", len(pending),
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
        event("migrated", "migrated %d revision(s) to %s in %s", len(revisions),
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
        event("reconciled", "accounted for %d revision(s) a previous leader left running",
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
                event("revision_start", "applying %s (%s)", script.revision,
                       (script.doc or "").strip().splitlines()[0] if script.doc else "",
                       revision=script.revision)
                yield step
                lock.verify()  # before writing on herd's connection: a dead lock session
                # is a lost lock (one transaction: all of it rolls back), not a failed revision
                history.finish(row, "applied")
                event("revision_done", "applied %s in %s", script.revision,
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
        event("command", "running %s while holding the lock",
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
