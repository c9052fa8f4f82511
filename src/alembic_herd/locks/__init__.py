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

One lock namespace
------------------
Replicas configured with different lock kinds (one deployment on the advisory lock, another
with ``--lock table``) must still exclude each other. :func:`create_lock` gives every lock
its *rivals*: the other kinds on the same database under the same key. :meth:`Lock.acquire`
takes its own lock, then asks each rival for a holder (``pg_locks``, ``IS_USED_LOCK``, a
live lease row: plain queries) and, when one is held, releases its own and keeps waiting.
Take-own-then-check-other on one server is safe when both start at once: each one's check
comes after its own take, so at least one of them sees the other; both backing off is
retried with the usual jittered backoff.

Fencing by the database
-----------------------
:meth:`Lock.fence` runs inside each revision's transaction, on the migration connection,
just before it commits. A session lock needs nothing there (:meth:`Lock.verify` before each
revision); the lease checks its token in that transaction and locks its row
(:mod:`.lease`).
"""

from __future__ import annotations

import select
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

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

    rivals: tuple[Lock, ...] = ()
    """The other lock kinds on this database under the same key (see "One lock namespace");
    set by :func:`create_lock`."""

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

    def confirm(self) -> None:
        """Before a revision starts: raise ``LockLostError`` if the lock is lost, at the
        cost of a round trip only when there is news. :meth:`verify` runs when the lock's
        session has something to say (a server that ends a session writes its reason and
        closes the socket: a terminated backend, a restart, a pooler's reset) or when
        :data:`~._defaults.LOCK_CONFIRM_EVERY` seconds have passed since the lock was last
        confirmed (a pause, a partition: nothing arrives, so time decides); otherwise it
        costs one ``poll()`` of that socket. A lock whose session's socket cannot be read
        this way (another driver) is verified every time."""
        now = time.monotonic()
        if now - self._confirmed < defaults.LOCK_CONFIRM_EVERY and _quiet(self._socket()):
            return
        self.verify()
        self._confirmed = time.monotonic()

    _confirmed: float = float("-inf")

    def confirmed(self) -> None:
        """A statement on the lock's session just confirmed the lock (:meth:`check`, a
        write that carried :attr:`guard`): :meth:`confirm` may wait again."""
        self._confirmed = time.monotonic()

    def _socket(self) -> int | None:
        """The file descriptor of the lock's session, ``None`` when unknown."""
        conn = getattr(self, "conn", None)
        if conn is None:
            return None
        try:
            driver = conn.connection.driver_connection
        except SQLAlchemyError:
            return None
        sock = getattr(driver, "_sock", None)  # PyMySQL
        try:
            return int(sock.fileno() if sock is not None else driver.fileno())
        except (AttributeError, OSError, ValueError, TypeError):
            return None

    probe: tuple[Any, ...] = ()
    """Columns that :meth:`verify` reads on the lock's session, for another statement on that
    session to return beside its own (the attempt log's write between two revisions): then
    :meth:`check` judges their values, and the check costs no round trip of its own. Empty:
    only :meth:`verify` can tell."""

    def check(self, values: Sequence[Any]) -> None:
        """:meth:`verify` from the :attr:`probe` values another statement read."""
        raise NotImplementedError

    guard: Any = None
    """A SQL condition, true only while this session holds the lock, for another write on
    the lock's session to carry in its ``WHERE`` (MySQL/MariaDB, no ``RETURNING``): a write
    that matched nothing calls :meth:`verify`, and the check costs no round trip of its own.
    ``None``: only :meth:`verify` (or :attr:`probe`) can tell."""

    def fence(self, conn: Connection, *, hold: bool) -> None:  # noqa: B027 - a hook
        """Inside the transaction of a revision about to commit, on the migration connection
        ``conn``: raise ``LockLostError`` (rolling that transaction back) if this process no
        longer holds the lock; with ``hold``, keep a take-over waiting until that transaction
        ends. The default does nothing: a session lock ends only with its session, which
        :meth:`verify` checks before every revision. The lease overrides it."""

    reads_also: ClassVar[bool] = False
    """A take of this lock reads :attr:`also` on its session."""

    also: dict[str, tuple[str, dict[str, Any]]] = {}  # replaced, never changed in place
    """Columns (SQL text and its bind values, by name) for the lock to read on its session
    in the statement that confirms a take, after it (:attr:`reads_also`): what the taker
    asks next under the lock (whether herd's tables exist, the server's identity) then costs
    no round trip of its own. Their values are in :attr:`seen` after each take."""

    seen: dict[str, Any] = {}  # replaced, never changed in place
    """The :attr:`also` values read with the last take; empty when not read (released,
    never taken, a backend that does not read them): the caller asks another way."""

    def want(self, name: str, column: tuple[str, dict[str, Any]] | None) -> None:
        """Read ``column`` (see :attr:`also`) with each take, as ``seen[name]``."""
        if column is not None and self.reads_also:
            self.also = {**self.also, name: column}

    def rival_holder(self) -> tuple[Lock, Holder] | None:
        """A rival kind held by someone (that lock and its holder), or ``None``."""
        for rival in self.rivals:
            holder = rival._own_holder()
            if holder is not None:
                return rival, holder
        return None

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
        backed_off = False

        def attempt() -> bool | None:
            nonlocal tried, backed_off
            if tried and while_waiting is not None and while_waiting():
                return False
            tried = True
            if not self.try_acquire():
                return None
            rival = self.rival_holder()
            if rival is None:
                return True
            self._release_quietly()  # the other kind is held: one namespace, keep waiting
            if not backed_off:
                log.warning("%s is free but %s is held by %s (a replica configured with "
                            "another lock kind); waiting for it", self.describe(),
                            rival[0].describe(), rival[1].describe())
                backed_off = True
            return None

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
        """:meth:`holder` (or a rival kind's holder), or ``None`` when its statement fails:
        naming the holder is best effort. A lost connection is not swallowed: the next
        statement on it would raise PendingRollbackError instead, which is no connection
        failure to reconnect from."""
        own = self._own_holder()
        if own is not None:
            return own
        rival = self.rival_holder()
        return rival[1] if rival else None

    def known_by(self, other: Lock) -> None:  # noqa: B027 - a hook
        """This lock is ``other``'s rival: it may learn what ``other`` reads with its take
        (the lease: whether its table exists, see :attr:`also`)."""

    def _own_holder(self) -> Holder | None:
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


def _build(kind: str, conn: Connection, key: LockKey, **options: object) -> Lock:
    if kind == GENERIC:
        return _lease(conn, key, **options)
    return BACKENDS[(kind, conn.dialect.name)](conn, key, **options)


def create_lock(kind: str, conn: Connection, key: LockKey, **options: object) -> Lock:
    """Build the lock for ``kind`` (already resolved by :func:`choose`) on ``conn``, with
    the other kinds of its dialect as its rivals (one lock namespace). A lease's ``table``
    (``[schema.]name``) is its rivals' too."""
    lock = _build(kind, conn, key, **options)
    where = {"table": options["table"]} if "table" in options else {}
    others = sorted(({k for (k, d) in BACKENDS if d == conn.dialect.name} | {GENERIC})
                    - {kind})
    rivals = []
    for other in others:
        try:
            rivals.append(_build(other, conn, key, **where))
        except ConfigurationError:  # e.g. no file lock for an in-memory SQLite database
            continue
    lock.rivals = tuple(rivals)
    for rival in rivals:  # is the lease table there? asked with the take, not after it
        rival.known_by(lock)
    return lock


__all__ = ["AUTO", "BACKENDS", "KINDS", "Lock", "LockKey", "choose", "create_lock"]


def _quiet(fd: int | None) -> bool:
    """Nothing to read on socket ``fd`` (``False`` when unknown: then verify)."""
    if fd is None:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
