"""The public operations: each resolves the project, builds a runner and makes one call.

Keyword-only options with safe, bounded defaults; durations as seconds, ``timedelta`` or
strings with units."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from alembic.config import Config
from sqlalchemy.engine import URL

from . import _defaults as defaults
from ._database import HOST
from ._durations import Deadline, Duration, to_seconds
from ._environment import load_environment
from ._log import event
from ._outcome import Outcome, Status
from ._phases import Phase
from ._runner import Runner, lane_request
from .errors import ConfigurationError, LockHeldError, LockTimeoutError

if TYPE_CHECKING:
    from ._history import Attempt

# Imported where used, not here: the leader's lock-wait policy, the lease, Alembic's
# commands. Every replica's restart at head imports this module, and those cost it CPU.


def upgrade(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    lock_timeout: Duration | str = defaults.LOCK_TIMEOUT,
    lock: str = "auto",
    lock_key: str | None = None,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    command: Sequence[str] | None = None,
    poll_interval: Duration | str = defaults.POLL_INTERVAL,
    lease_ttl: Duration | str = defaults.LEASE_TTL,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
    expand_only: bool = False,
    unmarked_phase: Phase = defaults.UNMARKED_PHASE,
    lock_wait_timeout: Duration | str = defaults.LOCK_WAIT_TIMEOUT,
    lock_wait_attempts: int = defaults.LOCK_WAIT_ATTEMPTS,
    lock_wait_budget: Duration | str = defaults.LOCK_WAIT_BUDGET,
    statement_timeout: Duration | str = defaults.STATEMENT_TIMEOUT,
) -> Outcome:
    """Bring the database to ``target``: migrate under the lock, or wait for whoever does.

    ``config`` is an Alembic ``Config`` or the path of an alembic.ini. ``lock_timeout``
    bounds connecting plus waiting for the lock (not the migration itself). ``command``,
    when given, is run while holding the lock instead of Alembic's upgrade (for apps whose
    migration entry point is their own CLI); the scripts' heads still decide whether
    anything is pending. ``lock_url`` is a direct connection for herd's lock and reads when
    ``url`` goes through a transaction pooler. ``x_arguments`` (``["key=value"]`` or a
    mapping) are what env.py reads with ``context.get_x_argument()`` (Alembic's ``-x``), in
    every function here. A database at revisions this code does not know (a rolling deploy)
    counts as current when herd's revision graph shows they are all expand, and raises
    :class:`~alembic_herd.errors.DatabaseAheadError` otherwise; ``allow_ahead`` lets it count
    as current regardless. ``expand_only`` stops before the first contract revision
    (:attr:`Outcome.left` lists what is left); ``unmarked_phase`` is what a revision without
    ``herd_phase`` counts as. ``poll_interval`` caps the backoff between two looks where the
    database cannot notify (a waiter that LISTENs on PostgreSQL polls every
    ``LISTEN_POLL_INTERVAL``, 5 s). ``lock_wait_timeout`` is how long one statement of the
    migration may wait for a table lock (the application's queries
    queue behind it meanwhile; 0 leaves the database's setting): a revision that times out
    is rolled back and tried again with a longer wait, up to ``lock_wait_attempts`` times
    within ``lock_wait_budget``, then :class:`~alembic_herd.errors.LockWaitError`.
    ``statement_timeout`` (0: off) caps any one statement. Returns an :class:`Outcome`;
    raises a
    :class:`~alembic_herd.errors.HerdError` subclass on failure.
    """
    from ._lockwait import Policy

    deadline = Deadline(to_seconds(lock_timeout, name="lock timeout"))
    lane = lane_request()
    if lane is not None and lane.waiting_since is not None:  # the fast lane waited first
        deadline = Deadline(deadline.seconds, start=lane.waiting_since)
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        lock_kind=lock, lock_key=lock_key, history_table=history_table, herd_schema=herd_schema,
        poll_cap=to_seconds(poll_interval, name="poll interval"),
        lease_ttl=to_seconds(lease_ttl, name="lease ttl"),
        lock_url=lock_url, allow_ahead=allow_ahead, expand_only=expand_only,
        unmarked_phase=unmarked_phase,
        lock_wait=Policy(
            timeout=to_seconds(lock_wait_timeout, name="lock wait timeout"),
            attempts=max(1, lock_wait_attempts),
            budget=to_seconds(lock_wait_budget, name="lock wait budget"),
            statement_timeout=to_seconds(statement_timeout, name="statement timeout")),
    )
    return runner.upgrade(target, deadline, command)


def downgrade(
    config: Config | str | os.PathLike[str],
    target: str,
    *,
    url: str | URL | None = None,
    yes: bool = False,
    lock_timeout: Duration | str = defaults.LOCK_TIMEOUT,
    lock: str = "auto",
    lock_key: str | None = None,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    poll_interval: Duration | str = defaults.POLL_INTERVAL,
    lease_ttl: Duration | str = defaults.LEASE_TTL,
    lock_url: str | URL | None = None,
    unmarked_phase: Phase = defaults.UNMARKED_PHASE,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
) -> Outcome:
    """Undo the revisions above ``target`` (an id, ``base``, ``-1``) under the same lock,
    fencing and attempt log as :func:`upgrade`. Undoing a contract revision raises
    :class:`~alembic_herd.errors.ConfigurationError` naming it and the data its downgrade
    cannot bring back, unless ``yes``. Returns an :class:`Outcome` (``downgraded``, or
    ``current`` when nothing is above ``target``)."""
    deadline = Deadline(to_seconds(lock_timeout, name="lock timeout"))
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        lock_kind=lock, lock_key=lock_key, history_table=history_table, herd_schema=herd_schema,
        poll_cap=to_seconds(poll_interval, name="poll interval"),
        lease_ttl=to_seconds(lease_ttl, name="lease ttl"),
        lock_url=lock_url, unmarked_phase=unmarked_phase,
    )
    return runner.downgrade(target, deadline, yes=yes)


def wait_until_current(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    timeout: Duration | str = defaults.WAIT_TIMEOUT,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    poll_interval: Duration | str = defaults.POLL_INTERVAL,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
    expand_only: bool = False,
    unmarked_phase: Phase = defaults.UNMARKED_PHASE,
) -> Outcome:
    """Wait until the database is at ``target``; never migrates, never takes the lock.

    For workers and schedulers that must not migrate; with ``expand_only``, until it has
    the revisions before the first contract one (what ``upgrade(expand_only=True)`` applies).
    Raises
    :class:`~alembic_herd.errors.LeaderFailedError` as soon as the attempt log shows the
    migrating replica failed, and :class:`~alembic_herd.errors.WaitTimeoutError` at the
    deadline.
    """
    deadline = Deadline(to_seconds(timeout, name="timeout"))
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        history_table=history_table, herd_schema=herd_schema,
        poll_cap=to_seconds(poll_interval, name="poll interval"),
        lock_url=lock_url, allow_ahead=allow_ahead, expand_only=expand_only,
        unmarked_phase=unmarked_phase,
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
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    recent: int = defaults.STATUS_RECENT,
    lock_url: str | URL | None = None,
    allow_ahead: bool = False,
    connect_timeout: Duration | str = defaults.CONNECT_TIMEOUT,
    unmarked_phase: Phase = defaults.UNMARKED_PHASE,
    expand_only: bool = False,
) -> Status:
    """Current heads, script heads, pending revisions, the lock holder, recent attempts.
    ``connect_timeout`` bounds connecting, retries included (a readiness check must not
    hang on a host that does not answer). With ``expand_only`` the revisions from the
    first contract one on are :attr:`Status.left`, not pending."""
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        lock_kind=lock, lock_key=lock_key, history_table=history_table, herd_schema=herd_schema,
        lock_url=lock_url, allow_ahead=allow_ahead,
        connect_timeout=to_seconds(connect_timeout, name="connect timeout"),
        unmarked_phase=unmarked_phase, expand_only=expand_only,
    )
    return runner.status(target, recent)


def history(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    limit: int = defaults.HISTORY_LIMIT,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    lock_url: str | URL | None = None,
    connect_timeout: Duration | str = defaults.CONNECT_TIMEOUT,
) -> list[Attempt]:
    """The attempt log for this project's version table, newest first."""
    seconds = to_seconds(connect_timeout, name="connect timeout")
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        history_table=history_table, herd_schema=herd_schema, lock_url=lock_url,
        connect_timeout=seconds,
    )
    with runner.session(Deadline(seconds)) as conn:
        return runner.history(conn, writer=False).rows(limit=limit)


def resolve(
    config: Config | str | os.PathLike[str],
    revision: str,
    *,
    url: str | URL | None = None,
    lock: str = "auto",
    lock_key: str | None = None,
    lock_timeout: Duration | str = defaults.RESOLVE_LOCK_TIMEOUT,
    version_table: str | None = None,
    version_table_schema: str | None = None,
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    history_table: str = defaults.HISTORY_TABLE,
    herd_schema: str | None = defaults.HERD_SCHEMA,
    lock_url: str | URL | None = None,
) -> int:
    """Mark ``revision``'s unfinished or failed attempts as resolved, after an operator
    repaired a half-applied revision by hand. Takes the lock, so it cannot race a running leader.
    Returns how many attempts were resolved."""
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        lock_kind=lock, lock_key=lock_key, history_table=history_table, herd_schema=herd_schema,
        lock_url=lock_url,
    )
    deadline = Deadline(to_seconds(lock_timeout, name="lock timeout"))
    with runner.session(deadline) as conn, runner.lock(conn).acquire(
            deadline, hint="a migration is running - wait for it, then resolve"):
        hist = runner.history(conn)
        rows = [r for r in (*hist.unfinished(), *hist.unfinished_downgrades(),
                            *hist.unresolved_failures()) if r.revision == revision]
        if not rows:
            raise ConfigurationError(
                f"revision {revision!r} has no unfinished or failed attempt to resolve in "
                f"{hist.table.fullname!r}; 'herd history' lists the attempts")
        for row in rows:
            if row.status == "running" and row.id is not None:  # a dead leader's attempt:
                # the rows after it were planned for revisions that never started
                hist.forget([r for r in hist.of_attempt(row.attempt)
                             if r.status == "running" and r.id is not None and r.id > row.id])
            hist.restate(row, "resolved",
                         f"resolved by an operator on {HOST} (pid {os.getpid()})")
        event("resolved", "marked %d attempt(s) of %s resolved", len(rows), revision)
        return len(rows)


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
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
    herd_schema: str | None = defaults.HERD_SCHEMA,
) -> str:
    """Clear a stale migration lock, refusing while its holder is alive.

    Session locks (PostgreSQL advisory, MySQL ``GET_LOCK``, the SQLite file lock) cannot be
    stale: the server or kernel frees them when the holder's session or process ends, so
    while one is held its holder is alive and this raises
    :class:`~alembic_herd.errors.LockHeldError` naming it. A lease is broken when it has
    expired, when its holder was on this host and its pid is gone, or with ``force``
    (the holder is then fenced before its next revision). Returns what was done.
    """
    runner = Runner(
        load_environment(config, url=url, version_table=version_table,
                         version_table_schema=version_table_schema, x_arguments=x_arguments),
        lock_kind=lock, lock_key=lock_key, lock_url=lock_url, herd_schema=herd_schema,
    )
    with runner.session(Deadline(defaults.UNLOCK_TIMEOUT)) as conn:
        the_lock = runner.lock(conn)
        try:
            with the_lock.acquire(Deadline(0)):  # one try
                return f"{the_lock.describe()} is free; nothing to do"
        except LockTimeoutError as busy:
            holder = busy.holder
        rival = the_lock.rival_holder()
        if rival is not None and rival[1] == holder:  # its own lock is free
            raise LockHeldError(
                f"{rival[0].describe()} is held by {rival[1].describe()}, a replica configured "
                f"with lock kind {rival[0].kind!r}; this unlock clears {the_lock.describe()} "
                f"only - run 'herd unlock --lock {rival[0].kind}'", holder=rival[1])
        who = holder.describe() if holder else "another replica"
        from .locks.lease import LeaseLock

        if isinstance(the_lock, LeaseLock):
            dead_here = (holder is not None and holder.host == HOST and holder.pid is not None
                         and not _pid_alive(holder.pid))
            if dead_here or force:
                the_lock.break_lease()
                reason = "its process is gone" if dead_here else "--force"
                event("unlocked", "broke %s held by %s (%s)", the_lock.describe(), who,
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


def offline_sql(
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    x_arguments: Sequence[str] | Mapping[str, str] | None = None,
) -> None:
    """Write the SQL of an upgrade to ``target`` to stdout, as ``alembic upgrade --sql``
    does (env.py's offline mode): no lock, no database connection."""
    from alembic import command as alembic_command

    env = load_environment(config, url=url, x_arguments=x_arguments)
    try:
        alembic_command.upgrade(env.config, target, sql=True)
    except Exception as exc:  # env.py's offline branch, or a target Alembic refuses
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigurationError(
            f"offline SQL (--sql) for target {target!r} failed in env.py's offline mode "
            f"({detail}); check the target, or make env.py's run_migrations_offline() work"
        ) from exc
