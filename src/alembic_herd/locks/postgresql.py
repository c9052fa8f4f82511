"""PostgreSQL: a session-level advisory lock on herd's dedicated autocommit connection.

``pg_try_advisory_lock`` never waits. The server releases the lock when the session ends,
so a leader that is killed frees it without anyone's help. A leader cut off from the
network is dropped by the server's TCP keepalives, which the lock session sets for itself
when it takes the lock (``tcp_keepalives_*``; libpq's keepalive parameters only configure
the client's socket): the lock is freed after at most idle + interval * count seconds of
silence (``tcp_user_timeout`` bounds the same when a reply was in flight). The holder is
advertised in the session's ``application_name`` so waiters can name it from
``pg_stat_activity``.

A session lock only works on a session of its own. Through a pooler in transaction mode
(PgBouncer) each statement may run on another server session: the lock would stay on a
pooled session, shared with whoever gets it next, and never be released. Before its first
try the lock compares the backend pid the connection reported at startup with
``pg_backend_pid()`` (a pooler reports its own), and after taking the lock it checks, on
the next statement, that the session running it holds the lock; either failing raises
:class:`~alembic_herd.errors.ConfigurationError` naming ``--lock table`` and ``--lock-url``.

Fencing (:meth:`AdvisoryLock.verify`, before every revision) costs one constant-time
round trip: it proves that the statement still runs on the backend that took the lock and
that the session was not reset (``DISCARD ALL``, ``RESET ALL``: the ``application_name``
set on taking the lock would be gone). A session lock only ends with its session or by an
unlock on that session, and nothing but herd runs statements on it, so that is the lock
still held. It does not read ``pg_locks``: that view copies every lock on the server under
all of the lock manager's partition locks, and a long migration in one transaction holds
thousands (measured: 0.28 ms with 3 locks on the server, 1.4 ms with 3,000), so checking
it before every revision grew quadratically with the chain and stalled other sessions'
lock requests. Taking the lock still checks ``pg_locks`` once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .._database import HOST, SERVER_KEEPALIVES
from ..errors import ConfigurationError, Holder, LockLostError
from . import Lock, LockKey

_ACQUIRE = sa.text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()")
_FIRST_ACQUIRE = sa.text(
    "SELECT CASE WHEN pg_backend_pid() = :reported THEN pg_try_advisory_lock(:k) END, "
    "pg_backend_pid()")
"""The first try, with the pooler check in the same statement: the lock is only tried on
the backend the connection announced at startup (NULL, not tried, on any other)."""
_CLAIM = (
    f"""
    SELECT set_config('application_name', :name, false), {SERVER_KEEPALIVES},
           pg_backend_pid(),
           EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND pid = pg_backend_pid() AND classid = :c AND objid = :o
                   AND objsubid = 1)
    """
)
"""The statement after a take (with the lock's :attr:`~alembic_herd.locks.Lock.also`
columns after these)."""
_VERIFY = sa.text("SELECT pg_backend_pid(), current_setting('application_name')")
_HOLDER = sa.text(
    """
    SELECT a.pid, a.application_name, a.client_addr::text AS client, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.classid = :classid AND l.objid = :objid AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)
"""The session holding this key in *this* database: advisory locks are per database, and
another database on the server may hold the same key (its own app's version table)."""


class AdvisoryLock(Lock):
    kind = "advisory"
    reads_also = True

    def __init__(self, conn: Connection, key: LockKey) -> None:
        self.conn = conn
        self.key = key
        self._int = key.as_int64()
        unsigned = self._int & 0xFFFFFFFFFFFFFFFF
        # pg_locks shows a bigint key split into two oids: high word, low word.
        self._classid, self._objid = unsigned >> 32, unsigned & 0xFFFFFFFF
        self._direct = False
        self._session: tuple[int, str] | None = None  # (backend pid, application_name)

    def describe(self) -> str:
        return f"lock {self.key.name!r} (postgresql advisory)"

    def try_acquire(self) -> bool:
        self.seen = {}
        reported = None if self._direct else _reported_backend_pid(self.conn)
        if reported is None:
            if not self._direct:
                self._check_direct()  # the driver does not tell: ask first
            got, backend = self.conn.execute(_ACQUIRE, {"k": self._int}).one()
        else:
            got, backend = self.conn.execute(_FIRST_ACQUIRE, {"k": self._int,
                                                              "reported": reported}).one()
            if got is None:  # another backend ran it: nothing was tried there
                raise self._pooled(f"it announced backend pid {reported} at startup, but "
                                   f"its statements run on backend {backend}")
            self._direct = True
        if not got:
            return False
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # the next statement: advertise the holder, set the server's TCP timeouts for this
        # session, and prove that the session running it is the one that took the lock
        params: dict[str, Any] = {"name": Holder.tag(os.getpid(), since, HOST),
                                  "c": self._classid, "o": self._objid}
        columns = [_CLAIM]
        for column, values in self.also.values():
            columns.append(column)
            params.update(values)
        name, _, now, held, *also = self.conn.execute(sa.text(", ".join(columns)),
                                                      params).one()
        if now != backend or not held:
            with suppress(DBAPIError):  # best effort: it may run on yet another session
                self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._int})
            raise self._pooled(f"the lock was taken on backend {backend}, but the next "
                               f"statement ran on backend {now}")
        self._session = (now, name)
        self.seen = dict(zip(self.also, also, strict=True))
        return True

    def _check_direct(self) -> None:
        """Refuse a connection that goes through a pooler: the backend pid the server
        reported at startup (BackendKeyData) is a pooler's own, not ``pg_backend_pid()``."""
        reported = _reported_backend_pid(self.conn)
        actual = self.conn.scalar(sa.text("SELECT pg_backend_pid()"))
        if reported is not None and reported != actual:
            raise self._pooled(f"it announced backend pid {reported} at startup, but its "
                               f"statements run on backend {actual}")
        self._direct = True

    def _pooled(self, evidence: str) -> ConfigurationError:
        return ConfigurationError(
            f"{self.describe()} needs a server session of its own, but this connection goes "
            f"through a connection pooler ({evidence}): in transaction pooling mode "
            "(PgBouncer) a session lock stays on a pooled session, shared with other clients "
            "and never released, and herd cannot tell that mode from session pooling. Use "
            "--lock table (lock='table'), or --lock-url (lock_url=) with a direct connection "
            "to the server for herd's lock")

    def release(self) -> None:
        self._session = None
        self.seen = {}
        self.conn.scalar(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._int})

    def verify(self) -> None:
        if self._session is None:
            raise LockLostError(f"{self.describe()} is not held by this session (released); "
                                "stopped before the next revision - run herd again")
        try:
            values = self.conn.execute(_VERIFY).one()
        except DBAPIError as exc:  # session gone (terminated, server restart): so is the lock
            raise LockLostError(
                f"{self.describe()}: its session failed ({type(exc.orig).__name__}), and a "
                "session lock ends with its session; stopped before the next revision - run "
                "herd again"
            ) from exc
        self.check(values)

    probe = (sa.func.pg_backend_pid(), sa.func.current_setting("application_name"))

    def check(self, values: Sequence[Any]) -> None:
        """The session lock is still this session's: same backend, and not reset (a reset
        clears the application name herd set when it took the lock)."""
        if self._session is None:
            raise LockLostError(f"{self.describe()} is not held by this session (released); "
                                "stopped before the next revision - run herd again")
        backend, name = values
        if backend != self._session[0]:
            raise LockLostError(
                f"{self.describe()} was taken on backend {self._session[0]}, but statements "
                f"now run on backend {backend} (a connection pooler?); stopped before the next "
                "revision - run herd again")
        if name != self._session[1]:
            raise LockLostError(
                f"{self.describe()} is no longer held by this session: it was reset (DISCARD "
                "ALL, as a connection pooler does), which releases session locks; stopped "
                "before the next revision - run herd again")

    def holder(self) -> Holder | None:
        row = self.conn.execute(_HOLDER, {"classid": self._classid, "objid": self._objid}).first()
        if row is None:
            return None
        return parse_application_name(row.application_name, row.pid, row.client)


parse_application_name = Holder.from_application_name
"""Read back ``herd <pid> <since> <host>`` (:meth:`.errors.Holder.from_application_name`)."""


def _reported_backend_pid(conn: Connection) -> int | None:
    """The backend pid the server announced when the connection opened, if the driver
    tells (psycopg 3, psycopg2); ``None`` otherwise."""
    raw = conn.connection.dbapi_connection
    info = getattr(raw, "info", None)
    pid = getattr(info, "backend_pid", None)
    if pid is None and hasattr(raw, "get_backend_pid"):
        pid = raw.get_backend_pid()  # type: ignore[union-attr]
    return pid if isinstance(pid, int) else None
