"""The attempt log: one row per attempt per revision.

Rows are written on the leader's lock connection (autocommit), outside the migration's own
transaction, so a failure or a kill leaves its trace even when the migration is rolled back.
SQLite allows one writer at a time, so there the rows are buffered and written once the
migration has finished (``deferred``).

Row states (``status``): ``running`` (started, not finished: the leader is migrating, or
died), ``applied``, ``failed`` (the migration raised), ``rolled back`` (was applied inside a
transaction that did not commit, or, with an error starting 'lock wait timeout', timed out
waiting for a lock and is tried again), ``blocked`` (the leader gave up after its lock waits
kept timing out; nothing of it applied), ``interrupted`` (the leader died; the database
rolled the revision back), ``resolved`` (an operator cleared a half-applied revision).
``herd downgrade`` writes ``reverting`` (undoing the revision) and then ``reverted``
(undone), ``failed``, ``rolled back`` or ``interrupted``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from . import _defaults as defaults
from ._database import HOST, mask_text
from ._tables import ensure_table, read_if_exists

DEFAULT_TABLE = defaults.HISTORY_TABLE
_ERROR_CHARS = 2000
_ROLE = {"role": "herd's attempt log", "instead": "--history-table / history_table="}
_ROWS_PER_INSERT = 999 // 12  # SQLite before 3.32 binds at most 999 parameters per statement

_Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def history_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
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


_SUCCESS = ("applied", "reverted")
_FINISHED = ("status", "finished", "duration", "success", "error")


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
        self.update = t.update().where(t.c.id == sa.bindparam("d_id")).values(
            {key: sa.bindparam(f"d_{key}", type_=t.c[key].type) for key in _FINISHED})
        # PostgreSQL: the previous row's update and the next row's insert in one statement
        # (with a CTE, SQLAlchemy no longer fetches the new key by itself: RETURNING)
        self.advance = self.insert.add_cte(self.update.cte("done")).returning(t.c.id)


class History:
    """Reads and writes one scope's rows (a scope is one version table)."""

    def __init__(self, conn: Connection, scope: str, *, table: str = DEFAULT_TABLE,
                 schema: str | None = None, deferred: bool = False) -> None:
        self.conn = conn
        self.scope = scope
        self.table = history_table(table, schema)
        self.deferred = deferred
        self._pending: list[Attempt] = []

    # -- writing (leader only, under the lock) ------------------------------------------

    def ensure(self) -> None:
        ensure_table(self.conn, self.table)

    def start(self, attempt: str, revision: str, *, status: str = "running") -> Attempt:
        return self.advance(None, attempt, revision, status=status)

    def advance(self, done: Attempt | None, attempt: str, revision: str, *,
                status: str = "running") -> Attempt:
        """The step between two revisions: record ``done`` (the previous revision's row)
        ``applied`` and start ``revision``'s row. On PostgreSQL both go in one statement,
        so one round trip and one commit per revision (a data-modifying CTE); elsewhere
        they are two."""
        if done is not None:
            self._finished(done, "applied", None)
        row = Attempt(revision=revision, status=status, started=datetime.now(UTC),
                      host=HOST, pid=os.getpid(), attempt=attempt)
        if self.deferred:
            self._pending.append(row)
            return row
        writes = self._writes
        if done is not None and self.conn.dialect.name == "postgresql":
            row.id = self.conn.execute(writes.advance, {**self._inserted(row),
                                                        **_finished(done)}).scalar_one()
            return row
        if done is not None:
            self._update(done)
        result = self.conn.execute(writes.insert, self._inserted(row))
        row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return row

    def finish(self, row: Attempt, status: str, error: str | None = None) -> None:
        self._finished(row, status, error)
        if not self.deferred:
            self._update(row)

    @staticmethod
    def _finished(row: Attempt, status: str, error: str | None) -> None:
        row.finished = datetime.now(UTC)
        row.duration = (row.finished - row.started).total_seconds()
        row.status = status
        row.success = status in _SUCCESS
        row.error = error

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
        one commit (SQLite syncs the file once per commit, not once per row)."""
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

    def _inserted(self, row: Attempt) -> dict[str, Any]:
        return {f"v_{key}": value for key, value in self._values(row).items()}

    @cached_property
    def _writes(self) -> _Writes:
        return _Writes(self.table)

    # -- reading ------------------------------------------------------------------------

    def exists(self) -> bool:
        return sa.inspect(self.conn).has_table(self.table.name, schema=self.table.schema)

    def rows(self, *, where: Sequence[Any] = (), limit: int | None = None,
             newest_first: bool = True) -> list[Attempt]:
        t = self.table
        query = sa.select(t).where(t.c.scope == self.scope, *where)
        query = query.order_by(t.c.id.desc() if newest_first else t.c.id)
        if limit is not None:
            query = query.limit(limit)
        empty: Sequence[sa.RowMapping] = ()
        result = read_if_exists(self.conn, t, lambda: self.conn.execute(query).mappings().all(),
                                empty, **_ROLE)
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

        return read_if_exists(self.conn, t, read, None, **_ROLE) or 0

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

    def unfinished(self) -> list[Attempt]:
        return self.rows(where=[self.table.c.status == "running"], newest_first=False)

    def unfinished_downgrades(self) -> list[Attempt]:
        """``reverting`` rows: a downgrade that stopped (killed, connection lost) before
        recording what became of them."""
        return self.rows(where=[self.table.c.status == "reverting"], newest_first=False)

    def of_attempt(self, attempt: str) -> list[Attempt]:
        return self.rows(where=[self.table.c.attempt == attempt], newest_first=False)
