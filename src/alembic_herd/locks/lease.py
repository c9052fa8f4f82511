"""A lease in a table: the portable lock for poolers and databases without session locks.

Each row is one lock: owner token, host, pid, acquired, expires, heartbeat. Times come from
the *database's* clock, so replicas with skewed clocks agree. Taking the lock is one
conditional ``UPDATE`` (free or expired) or one ``INSERT`` (first use); both are single
statements, so they work through PgBouncer in transaction pooling mode. A heartbeat thread
on its own connection extends the lease every ``ttl / 3``; a holder that dies stops
renewing and its lease expires after at most ``ttl``. A holder that fails to renew marks
the lease lost, and :meth:`verify` stops the runner before its next revision.

Fencing by the database (:meth:`LeaseLock.fence`): the owner column is the lease's token.
Before each revision's transaction commits, the leader runs, *inside that transaction on
the migration connection*, ``SELECT ... FROM herd_lock WHERE name = :key AND owner = :token
AND expires >= <server now> FOR UPDATE``. No row: the lease expired or was taken over, and
:class:`~alembic_herd.errors.LockLostError` rolls the transaction back (the revision's
writes and its version-table update with it). A row: it stays locked until the commit, so a
competitor's take-over (an ``UPDATE`` of that row) and ``herd unlock`` (a ``DELETE``) wait
for the commit: a take-over can never interleave with it. A leader paused past its lease
(SIGSTOP, a throttled container, a VM migration) therefore commits nothing when it resumes.
SQLite has no ``FOR UPDATE`` and needs none: it has one writer, and the migration
transaction has already written (the version table) when the check runs, so a competitor's
take-over cannot get the write lock before this transaction ends.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from .. import _defaults as defaults
from .._compat import DOUBLE
from .._database import HOST
from .._tables import ensure_table, exists_column, read_if_exists, split_name
from ..errors import Holder, LockLostError
from . import Lock, LockKey

log = logging.getLogger("alembic_herd")

DEFAULT_TABLE = defaults.LEASE_TABLE
DEFAULT_TTL = defaults.LEASE_TTL


def lease_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """The lease table; ``name`` may be schema-qualified, which wins over ``schema``."""
    named, name = split_name(name, option="lease table")
    schema = named or schema
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        # Double, not Float: MySQL's FLOAT is single precision, which rounds an epoch
        # timestamp to about +-64 s and lets a live lease look expired.
        sa.Column("acquired", DOUBLE, nullable=False),
        sa.Column("expires", DOUBLE, nullable=False),
        sa.Column("heartbeat", DOUBLE, nullable=False),
        schema=schema,
    )


_NOW = {  # seconds since the epoch by the server's clock; clock_timestamp(), not now():
    # inside a transaction now() is the time it began
    "postgresql": "extract(epoch from clock_timestamp())",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
    "mariadb": "UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
}


def db_now(conn: Connection) -> float:
    """Seconds since the epoch by the database server's clock."""
    expr = _NOW.get(conn.dialect.name)
    if expr is None:  # pragma: no cover - other dialects fall back to this host's clock
        return datetime.now(UTC).timestamp()
    return float(conn.scalar(sa.text(f"SELECT {expr}")))


class LeaseLock(Lock):
    kind = "table"

    def __init__(
        self,
        conn: Connection,
        key: LockKey,
        *,
        ttl: float = DEFAULT_TTL,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
    ) -> None:
        self.conn = conn
        self.key = key
        self.ttl = ttl
        self.table = lease_table(table, schema)
        self.owner = uuid.uuid4().hex
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False

    def describe(self) -> str:
        return (f"lock {self.key.name!r} (lease in table {self.table.fullname!r}, "
                f"ttl {self.ttl:g} s)")

    def _ensure(self) -> None:
        if not self._ready:
            ensure_table(self.conn, self.table)
            self._ready = True

    def try_acquire(self) -> bool:
        self._ensure()
        t = self.table
        now = db_now(self.conn)
        values = dict(owner=self.owner, host=HOST[:255], pid=os.getpid(), acquired=now,
                      expires=now + self.ttl, heartbeat=now)
        taken = self.conn.execute(
            t.update()
            .where(t.c.name == self.key.name)
            .where(sa.or_(t.c.expires < now, t.c.owner == self.owner))
            .values(**values)
        ).rowcount
        if not taken:
            try:
                self.conn.execute(t.insert().values(name=self.key.name, **values))
            except IntegrityError:
                return False
        self._lost.clear()
        self._stop.clear()
        if self._thread is None or not self._thread.is_alive():  # taken again while held:
            # the renewal above was enough, one heartbeat is running already
            self._thread = threading.Thread(target=self._heartbeat, name="herd-lease",
                                            daemon=True)
            self._thread.start()
        return True

    def _heartbeat(self) -> None:
        t = self.table
        interval = self.ttl / 3
        engine = self.conn.engine
        while not self._stop.wait(interval):
            try:
                with engine.connect() as hb:
                    now = db_now(hb)
                    renewed = hb.execute(
                        t.update()
                        .where(t.c.name == self.key.name, t.c.owner == self.owner,
                               t.c.expires >= now)
                        .values(expires=now + self.ttl, heartbeat=now)
                    ).rowcount
            except DBAPIError as exc:
                log.warning("%s: heartbeat failed (%s); retrying", self.describe(),
                            type(exc).__name__)
                continue
            if not renewed:
                log.error("%s: lease lost (expired or taken over)", self.describe())
                self._lost.set()
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        t = self.table
        self.conn.execute(t.delete().where(t.c.name == self.key.name, t.c.owner == self.owner))

    def verify(self) -> None:
        t = self.table
        if not self._lost.is_set():
            now = db_now(self.conn)
            mine = self.conn.scalar(
                sa.select(sa.func.count()).select_from(t)
                .where(t.c.name == self.key.name, t.c.owner == self.owner, t.c.expires >= now)
            )
            if mine:
                return
            self._lost.set()
        raise LockLostError(
            f"{self.describe()} expired or was taken over while this process held it; "
            "stopped before the next revision - run herd again"
        )

    def fence(self, conn: Connection, *, hold: bool) -> None:
        """Inside the migration's transaction on ``conn``: raise ``LockLostError`` (which
        rolls it back) unless the lease is still this process's and live by the server's
        clock; with ``hold``, lock the lease row until that transaction ends (see the module
        docstring)."""
        t = self.table
        now = _NOW.get(conn.dialect.name)
        live = t.c.expires >= (sa.literal_column(now, DOUBLE) if now else db_now(conn))
        query = sa.select(t.c.owner).where(t.c.name == self.key.name, t.c.owner == self.owner,
                                           live)
        if hold and conn.dialect.name != "sqlite":
            query = query.with_for_update()
        if conn.execute(query).first() is None:
            self._lost.set()
            raise LockLostError(
                f"{self.describe()} expired or was taken over while this process migrated "
                "(paused past the lease?); the database refused the revision's commit and "
                "rolled it back - another replica carries on")

    def break_lease(self) -> None:
        """Delete the lease row whoever holds it (``herd unlock``). A live holder is fenced:
        its next :meth:`verify` fails before it starts another revision."""
        self.conn.execute(self.table.delete().where(self.table.c.name == self.key.name))

    def known_by(self, other: Lock) -> None:
        """As ``other``'s rival, whether this table exists is read with ``other``'s take."""
        other.want(f"lease_{id(self)}", exists_column(self.conn.dialect.name, self.table,
                                                      "herd_lease"))
        self._told = other

    _told: Lock | None = None

    def holder(self) -> Holder | None:
        t = self.table
        if not self._ready:  # asked first, so that a database that never had a lease (an
            # advisory lock's rival check) logs no "table does not exist" error
            told = self._told.seen.get(f"lease_{id(self)}") if self._told else None
            if told is not None and not told:
                return None
            if told is None and not sa.inspect(self.conn).has_table(t.name, schema=t.schema):
                return None
            self._ready = True
        query = sa.select(t.c.host, t.c.pid, t.c.acquired, t.c.expires).where(
            t.c.name == self.key.name)
        row = read_if_exists(self.conn, t, lambda: self.conn.execute(query).first(), None,
                             role="herd's lease table", optional=True)
        if row is None or row.expires < db_now(self.conn):
            return None
        return Holder(host=row.host, pid=row.pid,
                      since=datetime.fromtimestamp(row.acquired, UTC))
