"""Migration lock backends.

A backend owns one primitive and nothing else: it *tries once* to take the lock
(:meth:`Lock.try_acquire`, never blocking inside the database), releases it, and says who
holds it. The waiting is :meth:`Lock.acquire`'s, the same for every backend: one deadline,
jittered backoff, and the caller's look around between two tries. A waiter blocked in
``pg_advisory_lock`` would be a session the leader's ``CREATE INDEX CONCURRENTLY`` waits
for forever; polling a non-blocking try-lock on an autocommit connection cannot deadlock.

Every caller takes the lock the same way (``herd migrate``, ``resolve`` and ``unlock``)::

    with lock.acquire(deadline, hint="raise --lock-timeout or see 'herd status'") as held:
        ...  # held: True; False only when while_waiting() gave up the wait

How to add a backend
--------------------
1. Subclass :class:`Lock` in ``locks/<name>.py`` and write its five methods.
   ``try_acquire`` returns ``True``/``False`` and must not block; ``release`` must be safe
   to call when the lock is already gone; ``verify`` must raise
   :class:`~alembic_herd.errors.LockLostError` when the lock is no longer this process's
   (the leader calls it before every revision).
2. Register it in :data:`BACKENDS` and, if it is the natural choice for a dialect, in
   :data:`AUTO`.
3. Add it to ``BACKENDS`` in ``tests/test_lock_contract.py`` (and its ways of losing the
   lock to ``LOSSES_OF``): every backend passes that suite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .. import _defaults as defaults
from .._durations import Deadline, format_seconds
from .._log import log
from .._polling import Pause, poll
from .._tables import key_int64
from ..errors import ConfigurationError, Holder, LockTimeoutError, UnsupportedDialectError


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


class Lock(ABC):
    """One migration lock, held on a connection dedicated to it.

    A backend writes the five abstract methods; :meth:`acquire` is the one way to wait for
    the lock, whatever the backend."""

    kind: ClassVar[str]
    """Backend name as the user chooses it (``advisory``, ``table``, ``file``)."""

    key: LockKey

    @abstractmethod
    def describe(self) -> str:
        """e.g. ``lock 'herd:app.alembic_version' (postgresql advisory)``."""

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free. Never blocks; ``False`` when someone else holds it."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock back. Safe to call when it is already gone."""

    @abstractmethod
    def verify(self) -> None:
        """Raise ``LockLostError`` if this process no longer holds the lock (fencing)."""

    @abstractmethod
    def holder(self) -> Holder | None:
        """Who holds the lock now, or ``None`` when it is free or unknown."""

    @contextmanager
    def acquire(self, deadline: Deadline, *, hint: str | Callable[[], str] = "",
                poll_cap: float = defaults.POLL_INTERVAL,
                while_waiting: Callable[[], bool] | None = None,
                pause: Pause | None = None) -> Iterator[bool]:
        """Hold the lock for the ``with`` block; yields ``True``.

        Tries at once, then again with jittered exponential backoff (capped at
        ``poll_cap`` seconds) until ``deadline``; an expired deadline tries once. Between
        two tries it calls ``while_waiting()``: when that returns ``True`` the wait is given
        up and the block runs without the lock (yields ``False``). At the deadline it raises
        :class:`~alembic_herd.errors.LockTimeoutError` naming the lock, the time waited and
        the holder, then ``hint`` (what to do next; a callable is asked at that moment).
        ``pause`` waits between two tries (default: a jittered sleep; a
        :class:`~alembic_herd._wakeup.Wakeup` also ends early on the leader's notification).
        Leaving the block releases the lock; a failed release is logged, never raised over
        the error that may be on its way out.
        """
        tried = False

        def attempt() -> bool | None:
            nonlocal tried
            if tried and while_waiting is not None and while_waiting():
                return False
            tried = True
            return True if self.try_acquire() else None

        held = poll(attempt, deadline, max(poll_cap, 0.01), pause)
        if held is None:
            holder = self.safe_holder()
            then = hint if isinstance(hint, str) else hint()
            raise LockTimeoutError(
                f"{self.describe()} not acquired after {format_seconds(deadline.seconds)}; "
                f"held by {holder.describe() if holder else 'nobody now'}"
                f"{'; ' + then if then else ''}", holder=holder)
        try:
            yield held
        finally:
            if held:
                self._release_quietly()

    def safe_holder(self) -> Holder | None:
        """:meth:`holder`, or ``None`` when its statement fails: naming the holder is best
        effort. A lost connection is not swallowed: the next statement on it would raise
        PendingRollbackError instead, which is no connection failure to reconnect from."""
        try:
            return self.holder()
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            return None

    def _release_quietly(self) -> None:
        try:
            self.release()
        except SQLAlchemyError as exc:  # the session is gone (or invalidated), and with it
            # a session lock; never mask the error that is on its way out
            log.warning("releasing %s failed (%s); the server frees it with the session",
                        self.describe(), type(exc).__name__)


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
