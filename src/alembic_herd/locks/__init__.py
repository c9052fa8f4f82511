"""Migration lock backends.

A backend owns one primitive and nothing else: it *tries once* to take the lock
(:meth:`Lock.try_acquire`, never blocking inside the database), releases it, and says who
holds it. Only the runner waits, with one deadline and jittered backoff. A waiter blocked
in ``pg_advisory_lock`` would be a session the leader's ``CREATE INDEX CONCURRENTLY`` waits
for forever; polling a non-blocking try-lock on an autocommit connection cannot deadlock.

How to add a backend
--------------------
1. Write a class with the methods of :class:`Lock` in ``locks/<name>.py``. ``try_acquire``
   returns ``True``/``False`` and must not block; ``release`` must be safe to call when the
   lock is already gone; ``verify`` must raise :class:`~alembic_herd.errors.LockLostError`
   when the lock is no longer this process's (the runner calls it before every revision).
2. Register it in :data:`BACKENDS` and, if it is the natural choice for a dialect, in
   :data:`AUTO`.
3. Run ``tests/test_lock_contract.py`` against it: every backend passes the same suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection

from .._tables import key_int64
from ..errors import ConfigurationError, Holder, UnsupportedDialectError


@dataclass(frozen=True)
class LockKey:
    """The lock's identity, derived from the version table so two applications sharing one
    database (different version tables or schemas) never block each other."""

    name: str

    @classmethod
    def for_version_table(cls, table: str, schema: str | None, database: str | None) -> LockKey:
        where = f"{schema}.{table}" if schema else table
        return cls(f"herd:{database}/{where}" if database else f"herd:{where}")

    def as_int64(self) -> int:
        return key_int64(self.name)


class Lock(Protocol):
    """One migration lock, held on a connection dedicated to it."""

    kind: str
    """Backend name as the user chooses it (``advisory``, ``table``, ``file``)."""

    key: LockKey

    def describe(self) -> str:
        """e.g. ``lock 'herd:app.alembic_version' (postgresql advisory)``."""
        ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free. Never blocks; ``False`` when someone else holds it."""
        ...

    def release(self) -> None:
        """Give the lock back. Safe to call when it is already gone."""
        ...

    def verify(self) -> None:
        """Raise ``LockLostError`` if this process no longer holds the lock (fencing)."""
        ...

    def holder(self) -> Holder | None:
        """Who holds the lock now, or ``None`` when it is free or unknown."""
        ...


LockFactory = Callable[..., Lock]


def _postgresql(conn: Connection, key: LockKey, **_: object) -> Lock:
    from .postgresql import AdvisoryLock

    return AdvisoryLock(conn, key)


def _mysql(conn: Connection, key: LockKey, **_: object) -> Lock:
    from .mysql import GetLock

    return GetLock(conn, key)


def _sqlite(conn: Connection, key: LockKey, **_: object) -> Lock:
    from .sqlite import FileLock

    return FileLock(conn, key)


def _lease(conn: Connection, key: LockKey, **options: object) -> Lock:
    from .lease import LeaseLock

    return LeaseLock(conn, key, **options)  # type: ignore[arg-type]


#: (lock kind, dialect) -> factory. ``table`` works on every dialect.
BACKENDS: dict[tuple[str, str], LockFactory] = {
    ("advisory", "postgresql"): _postgresql,
    ("advisory", "mysql"): _mysql,
    ("advisory", "mariadb"): _mysql,
    ("file", "sqlite"): _sqlite,
}
GENERIC = "table"
#: dialect -> the lock kind ``auto`` picks.
AUTO = {"postgresql": "advisory", "mysql": "advisory", "mariadb": "advisory", "sqlite": "file"}
KINDS = ("auto", "advisory", "table", "file")


def choose(kind: str, dialect: str) -> str:
    """The concrete lock kind for ``kind`` (possibly ``auto``) on ``dialect``."""
    if kind not in KINDS:
        raise ConfigurationError(
            f"lock backend {kind!r} is unknown; choose one of {', '.join(KINDS)}"
        )
    if kind == "auto":
        return AUTO.get(dialect, GENERIC)
    if kind != GENERIC and (kind, dialect) not in BACKENDS:
        available = sorted({k for (k, d) in BACKENDS if d == dialect} | {GENERIC})
        raise UnsupportedDialectError(
            f"lock backend {kind!r} is not available for {dialect}; choose one of "
            f"{', '.join(available)} (or auto)"
        )
    return kind


def create_lock(kind: str, conn: Connection, key: LockKey, **options: object) -> Lock:
    """Build the lock for ``kind`` (already resolved by :func:`choose`) on ``conn``."""
    if kind == GENERIC:
        return _lease(conn, key, **options)
    return BACKENDS[(kind, conn.dialect.name)](conn, key, **options)


__all__ = ["AUTO", "BACKENDS", "KINDS", "Lock", "LockKey", "choose", "create_lock"]
