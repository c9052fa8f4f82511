"""MySQL/MariaDB: ``GET_LOCK(name, 0)`` on herd's dedicated connection.

A timeout of 0 makes it a try-lock; its result is checked (1 taken, 0 busy, NULL error).
The server releases the lock when the session ends. Lock names are server-wide, so the
key includes the database name, and names longer than MySQL's 64 characters are hashed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import HerdError, Holder, LockLostError
from . import Lock, LockKey

_MAX_NAME = 64


def lock_name(key: LockKey) -> str:
    if len(key.name) <= _MAX_NAME:
        return key.name
    digest = hashlib.blake2b(key.name.encode(), digest_size=8).hexdigest()
    return f"{key.name[: _MAX_NAME - 17]}~{digest}"


class GetLock(Lock):
    kind = "advisory"
    reads_also = True

    def __init__(self, conn: Connection, key: LockKey) -> None:
        self.conn = conn
        self.key = key
        self.name = lock_name(key)

    def describe(self) -> str:
        return f"lock {self.name!r} (mysql GET_LOCK)"

    def try_acquire(self) -> bool:
        self.seen = {}
        result = self.conn.scalar(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": self.name})
        if result is None:
            raise HerdError(f"{self.describe()}: GET_LOCK returned NULL (server error); retry")
        if int(result) != 1:
            return False
        if self.also:  # after the take, in a statement of their own (see Lock.also)
            params: dict[str, Any] = {}
            for _, values in self.also.values():
                params.update(values)
            row = self.conn.execute(sa.text("SELECT " + ", ".join(
                column for column, _ in self.also.values())), params).one()
            self.seen = dict(zip(self.also, row, strict=True))
        return True

    def release(self) -> None:
        self.seen = {}
        self.conn.scalar(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})

    def verify(self) -> None:
        try:
            mine = self.conn.scalar(
                sa.text("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"), {"n": self.name}
            )
        except DBAPIError as exc:  # session gone (killed, server restart): so is the lock
            raise LockLostError(
                f"{self.describe()}: its session failed ({type(exc.orig).__name__}), and "
                "GET_LOCK ends with its session; stopped before the next revision - run herd "
                "again"
            ) from exc
        if not mine:
            raise LockLostError(
                f"{self.describe()} is no longer held by this session; stopped before the "
                "next revision - run herd again"
            )

    @property
    def guard(self) -> Any:
        """``IS_USED_LOCK(name) = CONNECTION_ID()``, the condition :meth:`verify` reads."""
        return sa.func.is_used_lock(sa.literal(self.name)) == sa.func.connection_id()

    def holder(self) -> Holder | None:
        conn_id = self.conn.scalar(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": self.name})
        if conn_id is None:
            return None
        row = self.conn.execute(
            sa.text("SELECT host, time FROM information_schema.processlist WHERE id = :i"),
            {"i": conn_id},
        ).first()
        where = f" from {row.host}" if row is not None else ""
        return Holder(detail=f"server connection {conn_id}{where}")
