"""``herd downgrade TARGET``: undo revisions under the same lock and attempt log as upgrades.

The runner takes the lock; :func:`downgrade_under_lock` then plans Alembic's downgrade from
the database's heads, refuses to undo a contract revision without ``yes`` (its downgrade
restores the schema, not the data its upgrade dropped or rewrote), and runs it in-process
with env.py, verifying the lock before each revision (and, for the lease, inside each
revision's transaction, as upgrades do). Each revision undone gets an attempt
log row: ``reverting`` while it runs, then ``reverted``, ``failed``, ``rolled back`` (its
transaction did not commit) or ``interrupted`` (a signal stopped the run).

A downgrade that died (SIGKILL, a lost connection) leaves its rows ``reverting``. The next
downgrade reconciles them against the version table before it plans, as upgrades do with
``running`` rows: a revision no longer there was undone (``reverted``); one still there was
rolled back by the database (``interrupted``), or, where DDL is not transactional (MySQL,
MariaDB), may be partly undone, so the downgrade stops (exit 10) until an operator has
looked and run ``herd resolve``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from alembic.script.revision import ResolutionError, RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from ._durations import format_seconds
from ._environment import Environment, capturing_context, preserved_logging
from ._heads import read_heads
from ._history import Attempt, History, describe_error
from ._log import event
from ._outcome import Outcome
from ._phases import Phase, phase_of
from ._signals import Interrupted, shielded
from .errors import (
    ConfigurationError,
    HerdError,
    IncompleteRevisionError,
    MigrationError,
    RevisionNotFoundError,
)
from .locks import Lock


def plan(env: Environment, heads: tuple[str, ...], target: str) -> list[Script]:
    """The revisions a downgrade from ``heads`` to ``target`` undoes, in the order it does."""
    try:
        steps = env.script._downgrade_revs(target, heads)  # type: ignore[arg-type]
    except (ResolutionError, RevisionError, CommandError) as exc:
        raise RevisionNotFoundError(
            f"cannot downgrade {env.qualified_version_table!r} from "
            f"{', '.join(heads) or 'base'} to {target!r}: {exc}; check the target with "
            "'alembic history' (a revision id, 'base', or '-1')") from exc
    return [step.revision for step in steps]


def downgrade_under_lock(env: Environment, conn: Connection, lock: Lock, history: History,
                         target: str, *, yes: bool, unmarked: Phase) -> Outcome:
    """Undo the revisions above ``target``; the caller holds ``lock``."""
    heads = read_heads(conn, env)
    reconcile(env, conn, history, heads)
    if _at_or_below(env, heads, target):  # e.g. another downgrade, to the same or lower
        event("current", "database is at %s, already at or below %s; nothing to downgrade",
              ", ".join(heads) or "base", target, heads=list(heads))
        return Outcome(action="current", heads=heads)
    undo = plan(env, heads, target)
    if not undo:
        event("current", "database is at %s; nothing to downgrade to %s",
              ", ".join(heads) or "base", target, heads=list(heads))
        return Outcome(action="current", heads=heads)
    contracts = [s for s in undo if phase_of(s, unmarked=unmarked) == "contract"]
    if contracts and not yes:
        what = "; ".join(f"{s.revision} ({_doc(s)})" for s in contracts)
        raise ConfigurationError(
            f"downgrading {env.qualified_version_table!r} to {target} undoes contract "
            f"revision(s) {what}: a downgrade restores the schema, not the data the upgrade "
            "dropped or rewrote (dropped columns and tables come back empty, converted values "
            "stay converted); pass --yes to downgrade anyway")
    history.ensure()
    attempt = uuid.uuid4().hex
    rows: list[Attempt] = []
    event("downgrading", "this replica downgrades %d revision(s) %s -> %s: %s", len(undo),
          ", ".join(heads), target, ", ".join(s.revision for s in undo),
          revisions=[s.revision for s in undo], attempt=attempt)

    per_step = [True]  # each revision commits on its own (else one transaction for all)

    def fence(ctx: MigrationContext, step: Any, **_: Any) -> None:
        """Alembic's on_version_apply, inside the revision's transaction: the lease's token
        is checked there (see Leader._run_alembic); session locks need nothing more."""
        assert ctx.connection is not None
        lock.fence(ctx.connection, hold=per_step[0] or step.up_revision_id == undo[-1].revision)

    def steps(rev: Any, context: MigrationContext) -> Any:
        per_step[0] = not (context.impl.transactional_ddl
                           and not context.opts.get("transaction_per_migration"))
        for step in env.script._downgrade_revs(target, rev):
            with shielded():  # SIGTERM waits for the bookkeeping, then stops the run
                lock.verify()  # fencing: never undo a revision without the lock
                rows.append(history.start(attempt, step.revision.revision, status="reverting"))
            event("revision_revert", "undoing %s (%s)", step.revision.revision,
                  _doc(step.revision), revision=step.revision.revision)
            yield step

    began = time.monotonic()
    ctx, _ = capturing_context(env.config, env.script, fn=steps, as_sql=False,
                               destination_rev=target, on_version_apply=fence)
    try:
        with preserved_logging(), ctx:
            env.script.run_env()
    except (HerdError, Interrupted) as exc:
        with shielded():
            _finish(env, conn, history, rows, error=f"stopped: {exc}", last="interrupted")
        raise
    except Exception as exc:
        error = describe_error(exc, env.url)
        with shielded():
            failed = _finish(env, conn, history, rows, error=error, last="failed")
        first = error.splitlines()[0] if error else type(exc).__name__
        raise MigrationError(
            f"downgrade of revision {failed or '(before any revision)'} failed: {first}; where "
            "DDL is not transactional (MySQL, MariaDB) it may be partly undone: inspect the "
            "schema ('herd history' has the details)", revision=failed) from exc
    took = time.monotonic() - began
    _finish(env, conn, history, rows, error=None, last="reverted")
    after = read_heads(conn, env)
    revisions = tuple(r.revision for r in rows if r.status == "reverted")
    event("downgraded", "downgraded %d revision(s) to %s in %s", len(revisions),
          ", ".join(after) or "base", format_seconds(took), revisions=list(revisions),
          seconds=took)
    return Outcome(action="downgraded", heads=after, revisions=revisions,
                   migrate_seconds=took, lock=lock.describe())


def _at_or_below(env: Environment, heads: tuple[str, ...], target: str) -> bool:
    """Whether every head of the database is ``target`` or one of its ancestors: the
    database has nothing above ``target`` (a relative target, '-1', never is)."""
    if not heads:
        return True
    try:
        script = env.script.get_revision(target)
    except (ResolutionError, RevisionError, CommandError):
        return False  # relative or unknown: plan() decides, and names the problem
    return script is not None and set(heads) <= env.applied((script.revision,))


def reconcile(env: Environment, conn: Connection, history: History,
              heads: tuple[str, ...]) -> None:
    """Account for the ``reverting`` rows of a downgrade that died; refuse to go on where
    one may have left a revision partly undone (DDL not transactional)."""
    leftover = history.unfinished_downgrades()
    if not leftover:
        return
    applied = env.applied(heads)
    transactional = _transactional(env, conn)
    for row in leftover:
        if row.revision not in applied:
            history.restate(row, "reverted", "downgrade stopped before recording the end; the "
                            "revision is no longer in the version table")
        elif transactional:
            history.restate(row, "interrupted", "downgrade stopped mid-way (died or lost its "
                            "connection); the database rolled the revision's downgrade back")
        else:
            raise IncompleteRevisionError(
                f"the downgrade of revision {row.revision} was started by pid {row.pid} on "
                f"host {row.host} at {row.started.isoformat(timespec='seconds')} and never "
                f"finished; {conn.dialect.name} DDL is not transactional, so the schema may be "
                "partly undone. Inspect it, complete or undo the change (then 'alembic stamp' "
                f"if completed), and run 'herd resolve {row.revision}'", revision=row.revision)
    event("reconciled", "accounted for %d revision(s) a previous downgrade left reverting",
          len(leftover), level=logging.WARNING)


def _transactional(env: Environment, conn: Connection) -> bool:
    if env.transactional_ddl is not None:
        return env.transactional_ddl
    from alembic.ddl.impl import DefaultImpl

    return bool(DefaultImpl.get_by_dialect(conn.dialect).transactional_ddl)


def _finish(env: Environment, conn: Connection, history: History, rows: list[Attempt], *,
            error: str | None, last: str) -> str | None:
    """Record what became of each row: undone (not in the version table any more) is
    ``reverted``; the one in progress when the run stopped is ``last``; the others' work
    did not commit (``rolled back``). Returns the revision in progress, if any."""
    still = env.applied(read_heads(conn, env))
    in_progress = None
    for index, row in enumerate(rows):
        if row.revision not in still:
            history.finish(row, "reverted")
        elif index == len(rows) - 1 and last != "reverted":
            in_progress = row.revision
            history.finish(row, last, error)
        else:
            history.finish(row, "rolled back", "its transaction did not commit")
    history.flush()
    return in_progress


def _doc(script: Script) -> str:
    return (script.doc or "").strip().splitlines()[0] if script.doc else "no message"
