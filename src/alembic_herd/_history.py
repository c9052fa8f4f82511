"""The attempt log: one row per attempt per revision.

Rows are written on the leader's lock connection (autocommit), outside the migration's own
transaction, so a failure or a kill leaves its trace even when the migration is rolled back:
an attempt's rows all go in, ``running``, before its first revision starts
(:meth:`History.plan`), and their outcome in one statement after its last
(:meth:`History.write`); a revision in between costs no write. The next leader tells from
the version table what became of a dead leader's rows (see ``Leader._reconcile``). SQLite
allows one writer at a time, so there the rows are buffered (``deferred``): a revision that
commits on its own has its ``applied`` row written in its own transaction, on the
migration's connection (:meth:`History.applied_in`), or, where herd's tables do not exist
yet, right after its commit (:meth:`History.landed`); the rest is written once the migration
has finished. A leader killed between two revisions thus leaves a log that agrees with the
version table.

No footprint before the application's: where the table does not exist yet, the leader
keeps its rows in memory (:meth:`History.create_late`) and creates the table (and the
revision graph) only once the first revision has committed, or a wrapped command has
exited, or a failure must be told to the waiters. An application whose own migration
command asks "is this database empty?" therefore gets the same answer under herd as
without it.

Row states (``status``): ``running`` (part of an attempt not finished: the leader is
migrating, or died), ``applied``, ``failed`` (the migration raised), ``rolled back`` (was
applied inside a transaction that did not commit, or, with an error starting 'lock wait
timeout', timed out waiting for a lock and is tried again), ``blocked`` (the leader gave up
after its lock waits kept timing out; nothing of it applied), ``interrupted`` (the leader
died; the database rolled the revision back), ``resolved`` (an operator cleared a
half-applied revision). ``herd downgrade`` writes ``reverting`` (undoing the revision) and then
``reverted`` (undone), ``failed``, ``rolled back`` or ``interrupted``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from . import _defaults as defaults
from ._compat import variant
from ._database import HOST, mask_text
from ._tables import ensure_tables, exists, read_if_exists, split_name

DEFAULT_TABLE = defaults.HISTORY_TABLE
_ERROR_CHARS = 2000
_ROLE = {"role": "herd's attempt log", "instead": "--history-table / history_table="}
_ROWS_PER_INSERT = 999 // 12  # SQLite before 3.32 binds at most 999 parameters per statement

_Timestamp = variant(sa.DateTime(timezone=True), mysql.DATETIME(fsp=6), "mysql", "mariadb")


def history_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """The attempt log; ``name`` may be schema-qualified (``app.herd_history``), which wins
    over ``schema``."""
    named, name = split_name(name, option="--history-table")
    schema = named or schema
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(191), nullable=False, index=True),
        sa.Column("attempt", sa.String(32), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started", _Timestamp, nullable=False),
        sa.Column("finished", _Timestamp),
        sa.Column("duration", sa.Float),
        sa.Column("success", sa.Boolean),
        sa.Column("error", sa.Text),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        schema=schema,
    )


@dataclass
class Attempt:
    """One row of the history table."""

    revision: str
    status: str
    started: datetime
    host: str
    pid: int
    attempt: str = ""
    finished: datetime | None = None
    duration: float | None = None
    success: bool | None = None
    error: str | None = None
    id: int | None = None
    saved: bool = field(default=True, compare=False, repr=False)
    """The table holds what this row says in memory (``False``: finished in memory only,
    :meth:`History.write` records it)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "revision": self.revision,
            "status": self.status,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "duration": self.duration,
            "success": self.success,
            "error": self.error,
            "host": self.host,
            "pid": self.pid,
        }


def describe_error(exc: BaseException, url: Any = None) -> str:
    """The first lines of an exception, password removed, bounded in size."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()][:5]
    return mask_text("\n".join(lines), url)[:_ERROR_CHARS]


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


SHARED_TRANSACTION = "in one transaction with the revisions before it in this attempt"
"""The note on a ``running`` row whose revision shares one transaction with the attempt's
earlier revisions (which stay ``running`` until that transaction commits): when it never
commits, the next leader records them ``rolled back`` and this one ``interrupted``."""

_SUCCESS = ("applied", "reverted")
_FINISHED = ("status", "started", "finished", "duration", "success", "error")


def _finished(row: Attempt) -> dict[str, Any]:
    """Bind values of :attr:`_Writes.update` for ``row``."""
    return {"d_id": row.id, **{f"d_{key}": getattr(row, key) for key in _FINISHED}}


class _Writes:
    """The leader's writes, built once with bind parameters: each call then only binds
    values. Building a statement per call (values(), a new cache key) cost the leader more
    CPU than the statement's round trip."""

    def __init__(self, t: sa.Table) -> None:
        self.insert = t.insert().values(
            {c.name: sa.bindparam(f"v_{c.name}", type_=c.type) for c in t.c if c.name != "id"})
        finished = {key: sa.bindparam(f"d_{key}", type_=t.c[key].type) for key in _FINISHED}
        self.update = t.update().where(t.c.id == sa.bindparam("d_id")).values(finished)
        # the ids of an attempt's rows inserted together (History.plan), after its first
        self.ids = sa.select(t.c.revision, t.c.id).where(
            t.c.id > sa.bindparam("after"), t.c.attempt == sa.bindparam("attempt"))
        # MySQL/MariaDB: rows' new state in one statement (PyMySQL sends an executemany of
        # an UPDATE as one statement per row, of an INSERT as one multi-row statement)
        upsert = mysql.insert(t).values(
            {c.name: sa.bindparam(f"u_{c.name}", type_=c.type) for c in t.c})
        self.upsert = upsert.on_duplicate_key_update(
            {key: upsert.inserted[key] for key in _FINISHED})
        # PostgreSQL: the previous row's update and the next row's insert in one statement
        # (with a CTE, SQLAlchemy no longer fetches the new key by itself: RETURNING)
        self.advance = self.insert.add_cte(self.update.cte("done")).returning(t.c.id)
        self._table = t
        self._returning: dict[tuple[bool, tuple[Any, ...]], Any] = {}
        self._guarded_update: Any = None
        self._guarded_insert: Any = None

    def guarded_update(self, guard: Any) -> Any:
        """:attr:`update`, only where ``guard`` holds; built once."""
        if self._guarded_update is None:
            self._guarded_update = self.update.where(guard)
        return self._guarded_update

    def guarded_insert(self, guard: Any) -> Any:
        """:attr:`insert` as ``INSERT ... SELECT`` of its values where ``guard`` holds."""
        if self._guarded_insert is None:
            t = self._table
            names = [c.name for c in t.c if c.name != "id"]
            values = sa.select(*[sa.bindparam(f"v_{n}", type_=t.c[n].type) for n in names])
            self._guarded_insert = t.insert().from_select(names, values.where(guard))
        return self._guarded_insert

    def returning(self, advance: bool, probe: tuple[Any, ...]) -> Any:
        """The insert (``advance``: with the previous row's update) returning the new id and
        ``probe``; built once per shape."""
        key = (advance, probe)
        if key not in self._returning:
            base = self.insert.add_cte(self.update.cte("done")) if advance else self.insert
            self._returning[key] = base.returning(self._table.c.id, *probe)
        return self._returning[key]


class History:
    """Reads and writes one scope's rows (a scope is one version table)."""

    def __init__(self, conn: Connection, scope: str, *, table: str = DEFAULT_TABLE,
                 schema: str | None = None, deferred: bool = False,
                 optional: bool = False, writer: bool = True) -> None:
        self.conn = conn
        self.scope = scope
        self.table = history_table(table, schema)
        self.deferred = deferred
        self.optional = optional
        """Reads only: a table this user may not read counts as empty (a runtime role)."""
        self.writer = writer
        """This process writes the log (a refusal to read it names the GRANT to write)."""
        self._pending: list[Attempt] = []
        self._late: Callable[[], None] | None = None
        self._was_deferred = deferred
        self._unwritable = False  # creating the table failed: the rows stay in memory
        self._tentative: tuple[Attempt, Attempt] | None = None  # see applied_in
        self._planned: list[Attempt] = []  # see plan: rows of revisions not started yet
        self.probed: tuple[Any, ...] | None = None
        """What the last write returned of a lock's probe (:meth:`advance`)."""
        self.guarded: bool | None = None
        """Whether the last write's lock guard held (:meth:`advance`)."""
        self.absent = False
        """The leader saw the table missing under the lock (:meth:`exists`): this scope's
        rows are written only by the lock's holder, so until this process creates the table
        there are none to read, and reads answer without a round trip."""

    # -- writing (leader only, under the lock) ------------------------------------------

    def ensure(self, also: Sequence[sa.Table] = ()) -> None:
        """Create the table if missing (and ``also``, herd's others, in the same round trip
        where the database allows)."""
        ensure_tables(self.conn, [self.table, *also], absent=self.absent)
        self.absent = False

    def create_late(self, then: Callable[[], None]) -> None:
        """Keep the rows in memory until :meth:`commit_point` (or :meth:`flush`); only then
        run ``then`` (which creates this table and herd's others) and write them."""
        self._late = then
        self.deferred = True

    @property
    def one_writer(self) -> bool:
        """Deferred because the database has one writer at a time (SQLite), not only
        until herd's tables appear."""
        return self._was_deferred

    @property
    def late(self) -> bool:
        return self._late is not None

    def commit_point(self, *, landed: Attempt | None = None, probe: tuple[Any, ...] = (),
                     guard: Any = None) -> None:
        """The application's first revision has committed: herd's tables may appear now.
        (SQLite keeps its rows until the migration is over: one writer at a time.)

        ``landed``: the row of a revision that committed on its own, written ``applied``
        at once (its commit is behind it), not ``running`` and then updated. ``probe`` and
        ``guard``: as in :meth:`advance`, carried by the last row's insert (then
        :attr:`probed` or :attr:`guarded` say what it found; when the guard did not hold,
        that row is not written)."""
        self.probed = None
        self.guarded = None
        if self._late is not None and not self._was_deferred:
            self._create_now()
            if self._unwritable:
                return
            self.deferred = False
            rows, self._pending = self._pending, []
            if landed is not None and any(row is landed for row in rows):
                self._finished(landed, "applied", None)
            if rows:  # the first carries the lock's check, the others follow it (their
                self._insert_checked(rows[0], probe, guard)  # ids after its)
                if self.guarded is not False:
                    self._insert_many(rows[1:], rows[0])

    def _insert_checked(self, row: Attempt, probe: tuple[Any, ...], guard: Any) -> None:
        """Insert ``row``, returning ``probe`` (PostgreSQL) or only where ``guard`` holds."""
        writes = self._writes
        if probe and self.conn.dialect.name == "postgresql":
            first, *rest = self.conn.execute(writes.returning(False, probe),
                                             self._inserted(row)).one()
            row.id, self.probed = first, tuple(rest)
        elif guard is not None:
            wrote = self.conn.execute(writes.guarded_insert(guard), self._inserted(row))
            self.guarded = bool(wrote.rowcount)
            if not self.guarded:
                return
            row.id = wrote.lastrowid
        else:
            result = self.conn.execute(writes.insert, self._inserted(row))
            row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        row.saved = True

    def _create_now(self) -> None:
        then, self._late = self._late, None
        if then is not None:
            try:
                then()
            except BaseException:
                self._unwritable = True  # the error says so; later writes would only mask it
                self._pending.clear()
                raise

    def plan(self, attempt: str, revisions: Sequence[str], *, shared: bool = False,
             probe: tuple[Any, ...] = (), guard: Any = None) -> None:
        """Record an attempt's revisions before the first of them starts: a ``running`` row
        each, in the order they will run, in one statement (for more than one revision, an
        executemany of the others and a read of their ids follow), so that no revision
        costs a write of its own. :meth:`advance` then only
        notes in memory where the run is, and :meth:`write` records the outcome of all of
        them in one statement. A leader killed meanwhile leaves the rows ``running``: the
        next one tells from the version table which revisions committed, which one was in
        progress (the first that did not commit, in id order) and which never started
        (deleted). Rows of revisions that did not start are deleted when the attempt ends
        another way too (:meth:`flush`).

        ``shared``: every revision runs in one transaction (the rows after the first carry
        :data:`SHARED_TRANSACTION`). ``probe`` and ``guard``: as in :meth:`advance`,
        carried by the first row's insert; when the guard did not hold, nothing is written
        (:attr:`guarded` is ``False``)."""
        self.probed = None
        self.guarded = None
        now, pid = datetime.now(UTC), os.getpid()
        rows = [Attempt(revision=revision, status="running", started=now, host=HOST, pid=pid,
                        attempt=attempt, error=SHARED_TRANSACTION if shared and index else None)
                for index, revision in enumerate(revisions)]
        self._planned = list(rows)
        if self.deferred:
            self._pending.extend(rows)
            return
        if not rows:
            return
        self._insert_checked(rows[0], probe, guard)
        if self.guarded is False:
            return
        self._insert_many(rows[1:], rows[0])

    def _insert_many(self, rows: Sequence[Attempt], after: Attempt) -> None:
        """``rows`` of ``after``'s attempt, inserted after it: one executemany (the driver
        sends one multi-row statement), then their ids in one read (their ids follow
        ``after``'s)."""
        if not rows:
            return
        writes = self._writes
        self.conn.execute(writes.insert, [self._inserted(row) for row in rows])
        ids = dict(self.conn.execute(writes.ids, {"after": after.id,
                                                  "attempt": after.attempt}).all())
        for row in rows:
            row.id, row.saved = ids.get(row.revision), True

    def _discard_unstarted(self) -> None:
        """The attempt ended (however): rows planned for revisions that never started go."""
        unstarted, self._planned = self._planned, []
        if not unstarted:
            return
        gone = {id(row) for row in unstarted}
        self._pending = [row for row in self._pending if id(row) not in gone]
        if not self.deferred:
            self.forget(unstarted)

    def forget(self, rows: Sequence[Attempt]) -> None:
        """Delete ``rows`` (read from the table): rows a dead leader planned for revisions
        it never started (:meth:`plan`)."""
        ids = [row.id for row in rows if row.id is not None]
        if ids:
            self.conn.execute(self.table.delete().where(self.table.c.id.in_(ids)))

    def start(self, attempt: str, revision: str, *, status: str = "running") -> Attempt:
        return self.advance(None, attempt, revision, status=status)

    def advance(self, done: Attempt | None, attempt: str, revision: str, *,
                status: str = "running", uncommitted: bool = False,
                probe: tuple[Any, ...] = (), guard: Any = None) -> Attempt:
        """The step between two revisions: record ``done`` (the previous revision's row)
        ``applied`` and start ``revision``'s row. On PostgreSQL both go in one statement,
        so one round trip and one commit per revision (a data-modifying CTE); elsewhere
        they are two.

        ``uncommitted``: ``done`` ran but its transaction (one for all revisions) has not
        committed, so its row stays ``running`` in the table and is ``applied`` in memory
        only, until :meth:`write` records it after the commit; one statement per revision.

        ``probe``: columns returned by the same statement (PostgreSQL; a lock's
        :attr:`~alembic_herd.locks.Lock.probe`), in :attr:`probed`; ``None`` there when
        they were not read (another database, deferred rows): the caller checks another way.

        ``guard``: a condition (a lock's :attr:`~alembic_herd.locks.Lock.guard`, MySQL/MariaDB)
        the first write carries in its ``WHERE`` (the previous row's update, else the new
        row's insert); :attr:`guarded` says whether it held (``None``: not checked). When it
        did not, nothing more is written: the caller verifies the lock.
        """
        self.probed = None
        self.guarded = None
        planned = self._planned
        if planned and planned[0].revision == revision and planned[0].attempt == attempt:
            row = planned.pop(0)  # its row is in the table already (plan): no statement
            row.started = datetime.now(UTC)
            row.saved = row.id is None
            if done is not None and not self._recorded(done):
                self._finished(done, "applied", None)
            return row
        row = Attempt(revision=revision, status=status, started=datetime.now(UTC),
                      host=HOST, pid=os.getpid(), attempt=attempt)
        if done is not None:
            if not self._recorded(done):
                self._finished(done, "applied", None)
            if uncommitted:
                done, row.error = None, SHARED_TRANSACTION
            elif done.saved and done.id is not None and done.status == "applied":
                done = None  # written 'applied' already (commit_point): only the new row
        if self.deferred:
            self._pending.append(row)
            return row
        writes = self._writes
        if self.conn.dialect.name == "postgresql" and (done is not None or probe):
            values = self._inserted(row)
            if done is not None:
                values.update(_finished(done))
            first, *rest = self.conn.execute(writes.returning(done is not None, probe),
                                             values).one()
            if done is not None:
                done.saved = True
            row.id = first
            if probe:
                self.probed = tuple(rest)
            return row
        if guard is not None:
            if done is not None:
                wrote = self.conn.execute(writes.guarded_update(guard), _finished(done))
            else:
                wrote = self.conn.execute(writes.guarded_insert(guard), self._inserted(row))
            self.guarded = bool(wrote.rowcount)
            if not self.guarded:
                return row
            if done is None:
                row.id = wrote.lastrowid
                return row
            done.saved = True
        elif done is not None:
            self._update(done)
        result = self.conn.execute(writes.insert, self._inserted(row))
        row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return row

    def add(self, attempt: str, revision: str, status: str, *, started: datetime,
            finished: datetime, error: str | None = None) -> Attempt:
        """A finished row written at once, for work herd did not time revision by revision
        (what a wrapped command applied): ``duration`` stays empty, never invented."""
        row = Attempt(revision=revision, status=status, started=started, finished=finished,
                      host=HOST, pid=os.getpid(), attempt=attempt,
                      success=status in _SUCCESS, error=error)
        if self.deferred:
            self._pending.append(row)
            return row
        result = self.conn.execute(self._writes.insert, self._inserted(row))
        row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return row

    def finish(self, row: Attempt, status: str, error: str | None = None, *,
               write: bool = True) -> None:
        if status == "applied" and self._recorded(row):
            return
        self._finished(row, status, error)
        if write and not self.deferred:
            self._update(row)

    def _recorded(self, row: Attempt) -> bool:
        """``row`` is already in the table as 'applied' (:meth:`landed`, :meth:`commit_point`)."""
        return row.saved and row.id is not None and row.status == "applied"

    def applied_in(self, conn: Connection, row: Attempt) -> bool:
        """Deferred mode (SQLite), a revision that commits on its own: write ``row`` as
        'applied' on ``conn``, the migration's own connection, inside the revision's
        transaction after its version-table update, so that it commits (or rolls back) with
        the revision. ``row`` itself changes only once :meth:`landed` says it committed.
        Returns whether it wrote (not where herd's tables are still to be created)."""
        self._tentative = None
        if not self._was_deferred or self._late is not None or self._unwritable or self.absent:
            return False
        done = replace(row)
        self._finished(done, "applied", None)
        result = conn.execute(self._writes.insert, self._inserted(done))
        done.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        done.saved = True
        self._tentative = (row, done)
        return True

    def landed(self, row: Attempt) -> None:
        """Deferred mode (SQLite): ``row``'s revision committed on its own. Its 'applied'
        row went in with it (:meth:`applied_in`), or is written now, on this connection,
        before the next revision's transaction begins (creating herd's tables first where
        they wait: :meth:`create_late`), with whatever else is buffered."""
        tentative, self._tentative = self._tentative, None
        if not self._was_deferred or self._unwritable:
            return
        if tentative is not None and tentative[0] is row:
            done = tentative[1]
            for key in ("id", *_FINISHED):
                setattr(row, key, getattr(done, key))
            row.saved = True
            self._pending = [r for r in self._pending if r is not row]
            return
        self._finished(row, "applied", None)
        self._create_now()
        rows, self._pending = self._pending, []
        for each in rows:  # one by one: later updates need their ids
            result = self.conn.execute(self._writes.insert, self._inserted(each))
            each.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
            each.saved = True

    def write(self, rows: Sequence[Attempt]) -> None:
        """Write the state ``rows`` have in memory and the table lacks (an attempt's
        outcome, :meth:`plan`), in one executemany: PostgreSQL's driver pipelines it, and on
        MySQL/MariaDB it is an ``INSERT ... ON DUPLICATE KEY UPDATE``, which the driver sends
        as one multi-row statement (PyMySQL would send an ``UPDATE`` once per row). Rows
        already written as they finished cost nothing."""
        unsaved = [row for row in rows if row.id is not None and not row.saved]
        if not unsaved or self.deferred:
            return
        if len(unsaved) > 1 and self.conn.dialect.name in ("mysql", "mariadb"):
            self.conn.execute(self._writes.upsert, [
                {f"u_{key}": value for key, value in (("id", row.id), *self._values(row).items())}
                for row in unsaved])
        else:
            self.conn.execute(self._writes.update, [_finished(row) for row in unsaved])
        for row in unsaved:
            row.saved = True

    @staticmethod
    def _finished(row: Attempt, status: str, error: str | None) -> None:
        row.finished = datetime.now(UTC)
        row.duration = (row.finished - row.started).total_seconds()
        row.status = status
        row.success = status in _SUCCESS
        row.error = error
        row.saved = False

    def restate(self, row: Attempt, status: str, error: str | None = None) -> None:
        """Change a finished row's status (e.g. ``applied`` -> ``rolled back``)."""
        row.status = status
        row.success = status in _SUCCESS
        if error is not None:
            row.error = error
        if row.id is not None:  # already in the table (deferred mode buffers only new rows)
            self._update(row)

    def flush(self) -> None:
        """Write rows buffered in deferred mode: a few rows per statement, each statement
        one commit (SQLite syncs the file once per commit, not once per row). Rows planned
        for revisions that never started are dropped first (:meth:`plan`)."""
        self._discard_unstarted()
        if self._late is not None and not self._was_deferred:
            self.commit_point()
            return
        if not self._pending or self._unwritable:
            return
        self._create_now()
        rows, self._pending = self._pending, []
        for first in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[first:first + _ROWS_PER_INSERT]
            self.conn.execute(self.table.insert().values([self._values(r) for r in chunk]))

    def _values(self, row: Attempt) -> dict[str, Any]:
        """The row's columns as the table takes them (the leader's hot path: no
        serialising, unlike :meth:`Attempt.as_dict`)."""
        return {"scope": self.scope, "attempt": row.attempt, "revision": row.revision,
                "status": row.status, "started": row.started, "finished": row.finished,
                "duration": row.duration, "success": row.success, "error": row.error,
                "host": row.host, "pid": row.pid}

    def _update(self, row: Attempt) -> None:
        self.conn.execute(self._writes.update, _finished(row))
        row.saved = True

    def _inserted(self, row: Attempt) -> dict[str, Any]:
        return {f"v_{key}": value for key, value in self._values(row).items()}

    @cached_property
    def _writes(self) -> _Writes:
        return _Writes(self.table)

    # -- reading ------------------------------------------------------------------------

    def exists(self, *, known: Any = None) -> bool:
        """Whether the table exists; the leader asks under the lock (see :attr:`absent`).
        ``known``: another statement on this session read it under the lock (the lock's
        claim), ``None``: ask."""
        found = exists(self.conn, self.table) if known is None else bool(known)
        self.absent = not found
        return found

    def rows(self, *, where: Sequence[Any] = (), limit: int | None = None,
             newest_first: bool = True) -> list[Attempt]:
        if self.absent:
            return []
        t = self.table
        query = sa.select(t).where(t.c.scope == self.scope, *where)
        query = query.order_by(t.c.id.desc() if newest_first else t.c.id)
        if limit is not None:
            query = query.limit(limit)
        empty: Sequence[sa.RowMapping] = ()
        result = read_if_exists(self.conn, t, lambda: self.conn.execute(query).mappings().all(),
                                empty, optional=self.optional, writer=self.writer, **_ROLE)
        return [
            Attempt(
                id=r["id"], attempt=r["attempt"], revision=r["revision"], status=r["status"],
                started=_utc(r["started"]) or datetime.now(UTC), finished=_utc(r["finished"]),
                duration=r["duration"], success=r["success"], error=r["error"],
                host=r["host"], pid=r["pid"],
            )
            for r in result
        ]

    def baseline(self) -> int:
        """The row after which a failure is news to a replica that starts now: the last
        row, or, while an attempt is running, the row before its first running row. A
        replica that starts while the leader is mid-revision (a rolling deploy) must still
        report that revision's failure instead of running the broken migration again."""
        t = self.table

        # One statement, so both aggregates come from one snapshot: with two queries a
        # leader could insert its first 'running' row between them and be missed.
        query = sa.select(
            sa.func.min(sa.case((t.c.status == "running", t.c.id))), sa.func.max(t.c.id)
        ).where(t.c.scope == self.scope)

        def read() -> int | None:
            first_running, last = self.conn.execute(query).one()
            if first_running is not None:
                return int(first_running) - 1
            return None if last is None else int(last)

        return read_if_exists(self.conn, t, read, None, optional=self.optional,
                               writer=self.writer, **_ROLE) or 0

    def failure_after(self, last_id: int) -> Attempt | None:
        """The first failed (or blocked) attempt written after row ``last_id``."""
        t = self.table
        rows = self.rows(where=[t.c.id > last_id, t.c.status.in_(("failed", "blocked"))],
                         limit=1,
                         newest_first=False)
        return rows[0] if rows else None

    def unresolved_failures(self) -> list[Attempt]:
        """``failed`` rows of revisions whose latest attempt failed (not since applied,
        resolved or retried successfully)."""
        t = self.table
        latest: dict[str, Attempt] = {}
        for row in self.rows(where=[t.c.status.in_(("failed", "applied", "resolved"))]):
            latest.setdefault(row.revision, row)  # rows come newest first
        return [row for row in latest.values() if row.status == "failed"]

    def recent(self, limit: int) -> list[Attempt]:
        """The newest rows, an attempt in progress counting as its newest row only (its
        rows are all written when it starts, :meth:`plan`): what tells a waiter whether the
        leader is retrying (:func:`~._waitnotes.retrying`). One statement."""
        t = self.table
        newest = sa.select(sa.func.max(t.c.id)).where(t.c.scope == self.scope)
        return self.rows(where=[sa.or_(t.c.status != "running",
                                       t.c.id == newest.scalar_subquery())], limit=limit)

    def unfinished(self) -> list[Attempt]:
        return self.rows(where=[self.table.c.status == "running"], newest_first=False)

    def unfinished_downgrades(self) -> list[Attempt]:
        """``reverting`` rows: a downgrade that stopped (killed, connection lost) before
        recording what became of them."""
        return self.rows(where=[self.table.c.status == "reverting"], newest_first=False)

    def of_attempt(self, attempt: str) -> list[Attempt]:
        return self.rows(where=[self.table.c.attempt == attempt], newest_first=False)
