"""PostgreSQL: a session-level advisory lock on herd's dedicated autocommit connection.

``pg_try_advisory_lock`` never waits. The server releases the lock when the session ends,
so a leader that is killed, or whose connection the server drops (TCP keepalives are set on
herd's connections), frees it without anyone's help. The holder is advertised in the
session's ``application_name`` so waiters can name it from ``pg_stat_activity``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .._database import HOST, PID
from ..errors import Holder, LockLostError
from . import LockKey

_HOLDER = sa.text(
    """
    SELECT a.pid, a.application_name, a.client_addr::text AS client, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.classid = :classid AND l.objid = :objid AND l.objsubid = 1
    """
)


class AdvisoryLock:
    kind = "advisory"

    def __init__(self, conn: Connection, key: LockKey) -> None:
        self.conn = conn
        self.key = key
        self._int = key.as_int64()
        unsigned = self._int & 0xFFFFFFFFFFFFFFFF
        # pg_locks shows a bigint key split into two oids: high word, low word.
        self._classid, self._objid = unsigned >> 32, unsigned & 0xFFFFFFFF

    def describe(self) -> str:
        return f"lock {self.key.name!r} (postgresql advisory)"

    def try_acquire(self) -> bool:
        got = bool(self.conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._int}))
        if got:
            since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.conn.execute(
                sa.text("SELECT set_config('application_name', :n, false)"),
                {"n": f"herd {PID} {since} {HOST}"[:63]},
            )
        return got

    def release(self) -> None:
        self.conn.scalar(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._int})

    def verify(self) -> None:
        try:
            held = self.conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = :c AND objid = :o AND objsubid = 1"
                ),
                {"c": self._classid, "o": self._objid},
            )
        except DBAPIError as exc:  # session gone (terminated, server restart): so is the lock
            raise LockLostError(
                f"{self.describe()}: its session failed ({type(exc.orig).__name__}), and a "
                "session lock ends with its session; stopped before the next revision - run "
                "herd again"
            ) from exc
        if not held:
            raise LockLostError(
                f"{self.describe()} is no longer held by this session (pooler or server "
                "restart?); stopped before the next revision - run herd again"
            )

    def holder(self) -> Holder | None:
        row = self.conn.execute(_HOLDER, {"classid": self._classid, "objid": self._objid}).first()
        if row is None:
            return None
        return parse_application_name(row.application_name, row.pid, row.client)


def parse_application_name(name: str | None, backend_pid: int, client: str | None) -> Holder:
    """Read back ``herd <pid> <since> <host>``; other sessions are described as they are."""
    parts = (name or "").split(" ", 3)
    if len(parts) == 4 and parts[0] == "herd" and parts[1].isdigit():
        try:
            since = datetime.strptime(parts[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            since = None
        return Holder(host=parts[3], pid=int(parts[1]), since=since)
    return Holder(detail=f"server backend {backend_pid} ({name or 'no application_name'}"
                  f"{', from ' + client if client else ''})")
