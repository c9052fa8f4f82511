"""One contract for every lock backend, run against real databases.

Each backend (PostgreSQL advisory lock on the embedded server and on the server at
HERD_TEST_POSTGRES_URL, MySQL/MariaDB GET_LOCK, SQLite flock, and the lease table on
PostgreSQL, MySQL and SQLite) is driven through :class:`~alembic_herd.locks.Lock` on
connections made by herd's own ``create_engine``: try-lock semantics, holder reporting,
release, fencing (``verify``), a SIGKILLed holder, independent keys, and the one acquire
loop every caller uses (``with lock.acquire(deadline) as held``).

A new backend passes by adding one entry to :data:`BACKENDS` (and its ways of losing the
lock to :data:`LOSSES_OF`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from alembic_herd import (
    ConfigurationError,
    LockLostError,
    LockTimeoutError,
    UnsupportedDialectError,
)
from alembic_herd._database import HOST, create_engine
from alembic_herd._durations import Deadline
from alembic_herd.errors import Holder
from alembic_herd.locks import KINDS, Lock, LockKey, choose, create_lock
from conftest import make_database, render

PID = os.getpid()
SAFETY = 60.0  # seconds; a bound on waiting for something that should happen, not a measurement

BACKENDS = [  # (lock kind, server as conftest names it)
    ("advisory", "postgresql"),
    ("advisory", "postgresql-server"),
    ("advisory", "mysql"),
    ("file", "sqlite"),
    ("table", "postgresql"),
    ("table", "mysql"),
    ("table", "sqlite"),
]
CASES = [pytest.param(b, id="-".join(b)) for b in BACKENDS]

fresh_database = contextlib.contextmanager(make_database)


@dataclass
class Backend:
    """One lock kind on one fresh database; hands out locks on new connections."""

    kind: str
    server: str
    url: URL
    engine: Engine
    key: LockKey
    conns: list[Connection] = field(default_factory=list)
    locks: list[Lock] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def connect(self) -> Connection:
        conn = self.engine.connect()
        self.conns.append(conn)
        return conn

    def lock(self, key: LockKey | None = None, *, ttl: float = 30.0) -> Lock:
        """A lock object on a connection of its own (a separate database session)."""
        lock = create_lock(self.kind, self.connect(), key or self.key, ttl=ttl)
        self.locks.append(lock)
        return lock

    def close(self) -> None:
        for lock in self.locks:
            with contextlib.suppress(Exception):
                lock.release()
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        self.engine.dispose()


@contextlib.contextmanager
def open_backend(kind: str, server: str, request: pytest.FixtureRequest,
                 folder: Path) -> Iterator[Backend]:
    """``kind`` of lock on a fresh database on ``server`` (a conftest backend name), keyed
    as herd keys an app whose version table is ``alembic_version``."""
    with fresh_database(server, request, folder) as url:
        database = url.database if server == "mysql" else None
        b = Backend(kind, server, url, create_engine(url),
                    LockKey.for_version_table("alembic_version", None, database))
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind, server = request.param
    with open_backend(kind, server, request, tmp_path) as b:
        yield b


def returns_promptly(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging) if it blocks past the safety bound."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SAFETY)
    assert not thread.is_alive(), f"{fn} blocked for more than {SAFETY:g} s"
    if errors:
        raise errors[0]
    return result[0]


def eventually(fn: Callable[[], Any], what: str) -> Any:
    """Poll ``fn`` until it returns something truthy (safety bound: SAFETY seconds)."""
    deadline = time.monotonic() + SAFETY
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def assert_names(holder: Holder | None, *, pid: int, case: Backend,
                 conn_id: int | None = None) -> None:
    """The holder as each backend can name it: host and pid, or MySQL's connection id."""
    assert holder is not None
    if case.dialect == "mysql" and case.kind == "advisory":
        assert conn_id is not None
        assert holder.detail and f"server connection {conn_id}" in holder.detail, holder
    else:
        assert (holder.host, holder.pid) == (HOST, pid), holder
        assert holder.since is not None
    assert holder.describe() != "an unknown holder"


def connection_id(lock: Lock) -> int | None:
    conn: Connection | None = getattr(lock, "conn", None)
    if conn is None or conn.dialect.name != "mysql":
        return None
    return int(conn.scalar(sa.text("SELECT CONNECTION_ID()")))


# -- the contract -------------------------------------------------------------------------


def test_a_free_lock_is_taken_and_a_second_holder_is_refused_without_blocking(
        case: Backend) -> None:
    """try_acquire takes a free lock, and a second lock object on another session gets False
    at once instead of waiting."""
    first, second = case.lock(), case.lock()
    assert returns_promptly(first.try_acquire) is True
    assert returns_promptly(second.try_acquire) is False
    assert returns_promptly(second.try_acquire) is False  # still refused, still not blocking
    first.verify()
    assert case.key.name in first.describe() or case.kind == "file"


def test_holder_names_who_holds_the_lock_and_none_when_free(case: Backend) -> None:
    """holder() names the holding process (host and pid; the connection id on MySQL) to
    anyone who asks, and is None while the lock is free."""
    first, second = case.lock(), case.lock()
    assert second.holder() is None
    assert first.try_acquire()
    assert_names(second.holder(), pid=PID, case=case, conn_id=connection_id(first))
    first.release()
    assert second.holder() is None


def test_release_frees_the_lock_is_idempotent_and_only_the_holder_can_release(
        case: Backend) -> None:
    """release() lets another session take the lock, is safe to call twice, and a release
    by a session that does not hold the lock leaves the holder holding it."""
    first, second = case.lock(), case.lock()
    assert first.try_acquire()
    second.release()  # not the holder: must not free the lock
    first.verify()
    assert not second.try_acquire()
    first.release()
    first.release()  # twice is safe
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()
    assert first.try_acquire()


def test_verify_passes_while_held_and_raises_after_release(case: Backend) -> None:
    """verify() is silent while the lock is held and raises LockLostError once released."""
    lock = case.lock()
    assert lock.try_acquire()
    lock.verify()
    lock.verify()
    lock.release()
    with pytest.raises(LockLostError) as err:
        lock.verify()
    assert str(err.value).startswith(lock.describe()), err.value


def _lose_by_killing_the_session(case: Backend, lock: Lock) -> None:
    conn: Connection = lock.conn  # type: ignore[attr-defined]
    with case.engine.connect() as admin:
        if case.dialect == "postgresql":
            backend_pid = conn.scalar(sa.text("SELECT pg_backend_pid()"))
            assert admin.scalar(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend_pid})
        else:
            admin.execute(sa.text(f"KILL {int(connection_id(lock) or 0)}"))


def _lose_by_resetting_the_session(case: Backend, lock: Lock) -> None:
    """What a connection pooler's reset (DISCARD ALL, RELEASE_ALL_LOCKS) does to the lock."""
    conn: Connection = lock.conn  # type: ignore[attr-defined]
    if case.dialect == "postgresql":
        conn.execute(sa.text("DISCARD ALL"))
    else:
        conn.scalar(sa.text("SELECT RELEASE_ALL_LOCKS()"))


def _lose_by_expiry(case: Backend, lock: Lock) -> None:
    """The lease ran out (say the heartbeat could not reach the database)."""
    table: sa.Table = lock.table  # type: ignore[attr-defined]
    with case.engine.connect() as admin:
        admin.execute(table.update().values(expires=table.c.expires - 3600))


def _lose_by_unlinking_the_file(case: Backend, lock: Lock) -> None:
    """Someone deleted the 'stale-looking' lock file: the next process locks a new file."""
    path: Path = lock.path  # type: ignore[attr-defined]
    path.unlink()


LOSSES: dict[str, Callable[[Backend, Lock], None]] = {
    "kill-session": _lose_by_killing_the_session,
    "reset-session": _lose_by_resetting_the_session,
    "lease-expired": _lose_by_expiry,
    "file-unlinked": _lose_by_unlinking_the_file,
}
LOSSES_OF = {  # lock kind -> how a holder can lose it
    "advisory": ["kill-session", "reset-session"],
    "file": ["file-unlinked"],
    "table": ["lease-expired"],
}
LOSS_CASES = [pytest.param(b, loss, id=f"{'-'.join(b)}-{loss}")
              for b in BACKENDS for loss in LOSSES_OF[b[0]]]


@pytest.mark.parametrize(("case", "loss"), LOSS_CASES, indirect=["case"])
def test_verify_raises_lock_lost_once_another_session_can_take_the_lock(
        case: Backend, loss: str) -> None:
    """After the lock is lost (session killed or reset, lease expired, lock file deleted) and
    another session takes it, verify() raises LockLostError instead of letting two leaders
    migrate."""
    holder, other = case.lock(), case.lock()
    assert holder.try_acquire()
    holder.verify()
    LOSSES[loss](case, holder)
    eventually(other.try_acquire, "another session takes the lost lock")
    with pytest.raises(LockLostError) as err:
        holder.verify()
    assert str(err.value).startswith(holder.describe()), err.value
    assert "run herd again" in str(err.value)
    other.verify()


# -- the acquire loop every caller uses ---------------------------------------------------


def counting_tries(lock: Lock) -> list[bool]:
    """Record every try_acquire() of ``lock`` (its results, in order)."""
    tries: list[bool] = []
    original = lock.try_acquire

    def counted() -> bool:
        tries.append(original())
        return tries[-1]

    lock.try_acquire = counted  # type: ignore[method-assign]
    return tries


def test_acquire_holds_the_lock_for_the_block_and_releases_it_after(case: Backend) -> None:
    """acquire() yields True with the lock held (verify passes, others are refused) and
    frees it when the block ends."""
    lock, other = case.lock(), case.lock()
    with lock.acquire(Deadline(SAFETY)) as held:
        assert held is True
        lock.verify()
        assert not other.try_acquire()
    assert other.try_acquire()


def test_acquire_times_out_naming_the_lock_the_holder_and_the_hint(case: Backend) -> None:
    """At the deadline acquire() raises LockTimeoutError naming the lock, the time waited,
    the holder (also as .holder) and the caller's hint, without running the block."""
    holder, waiter = case.lock(), case.lock()
    assert holder.try_acquire()
    tries = counting_tries(waiter)
    ran = False
    with pytest.raises(LockTimeoutError) as err, \
            waiter.acquire(Deadline(0.5), poll_cap=0.05, hint=lambda: "try later"):
        ran = True
    message = str(err.value)
    assert not ran and tries and not any(tries)
    assert message.startswith(f"{waiter.describe()} not acquired after 0.50 s; held by ")
    assert message.endswith("; try later")
    assert_names(err.value.holder, pid=PID, case=case, conn_id=connection_id(holder))
    assert err.value.holder is not None and err.value.holder.describe() in message
    holder.verify()


def test_while_waiting_runs_between_tries_and_can_give_up_the_wait(case: Backend) -> None:
    """while_waiting() is not called before the first try, is called between two tries,
    and once it returns True the block runs without the lock (held is False) while the
    holder keeps it."""
    holder, waiter = case.lock(), case.lock()
    tries = counting_tries(waiter)
    looks: list[int] = []

    def look() -> bool:
        looks.append(len(tries))  # how many tries came before this look
        return len(looks) == 3

    with waiter.acquire(Deadline(0), while_waiting=look) as held:
        assert held is True and looks == []  # free: taken at the first try, no look
    assert holder.try_acquire()
    tries.clear()
    with waiter.acquire(Deadline(SAFETY), poll_cap=0.05, while_waiting=look) as held:
        assert held is False
    assert looks == [1, 2, 3] and tries == [False, False, False]
    holder.verify()
    assert not case.lock().try_acquire()


def test_acquire_releases_on_an_exception_and_lets_it_through(
        case: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """An exception in the block releases the lock and reaches the caller unchanged, even
    when the release itself fails (a session already gone): that is logged, not raised."""
    lock, other = case.lock(), case.lock()
    with pytest.raises(ValueError, match="in the block"), lock.acquire(Deadline(SAFETY)):
        raise ValueError("in the block")
    assert other.try_acquire()
    other.release()

    def broken_release() -> None:
        raise sa.exc.OperationalError("SELECT release", {}, Exception("session gone"))

    original = lock.release
    lock.release = broken_release  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="alembic_herd"), \
            pytest.raises(ValueError, match="in the block"), lock.acquire(Deadline(SAFETY)):
        raise ValueError("in the block")
    assert f"releasing {lock.describe()} failed (OperationalError)" in caplog.text
    original()
    assert other.try_acquire()


def test_a_zero_deadline_tries_exactly_once(case: Backend) -> None:
    """acquire(Deadline(0)) tries once: it takes a free lock, and raises LockTimeoutError
    at once when another session holds it."""
    holder, waiter = case.lock(), case.lock()
    assert holder.try_acquire()
    tries = counting_tries(waiter)
    with pytest.raises(LockTimeoutError), waiter.acquire(Deadline(0)):
        pass
    assert tries == [False]
    holder.release()
    with waiter.acquire(Deadline(0)) as held:
        assert held and tries == [False, True]


HOLDER_PROCESS = """
import sys, time
from sqlalchemy.engine import make_url
from alembic_herd._database import create_engine
from alembic_herd.locks import LockKey, create_lock
url, kind, key = sys.argv[1:4]
conn = create_engine(make_url(url)).connect()
lock = create_lock(kind, conn, LockKey(key), ttl=2.0)
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_process_killed_with_sigkill_frees_the_lock(case: Backend) -> None:
    """A holder process killed with SIGKILL frees the lock with no help from it (the server
    ends its session, the kernel drops its flock, its 2 s lease expires)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_PROCESS, render(case.url), case.kind,
         case.key.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
        mine = case.lock(ttl=2.0)
        assert not mine.try_acquire()
        holder = mine.holder()
        if case.kind == "advisory" and case.dialect == "mysql":
            assert holder is not None and holder.detail
        else:
            assert holder is not None and (holder.host, holder.pid) == (HOST, proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(SAFETY)
        eventually(mine.try_acquire, "the killed holder's lock to be freed")
        mine.verify()
        assert_names(mine.holder(), pid=PID, case=case, conn_id=connection_id(mine))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


KEYED = [pytest.param(b, id="-".join(b)) for b in BACKENDS if b[0] != "file"]


@pytest.mark.parametrize("case", KEYED, indirect=True)
def test_different_keys_do_not_block_each_other(case: Backend) -> None:
    """Two applications in one database (different version tables) hold their own locks at
    once, and releasing one leaves the other held."""
    database = case.url.database if case.dialect == "mysql" else None
    billing = LockKey.for_version_table("billing_version", None, database)
    assert billing != case.key
    app, other_app = case.lock(), case.lock(billing)
    assert app.try_acquire()
    assert returns_promptly(other_app.try_acquire) is True
    app.verify()
    other_app.verify()
    assert not case.lock().try_acquire()
    assert not case.lock(billing).try_acquire()
    app.release()
    other_app.verify()
    assert case.lock().try_acquire()


def test_the_same_app_in_another_database_has_a_lock_of_its_own(
        case: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two databases on one server, each with its own alembic_version, lock independently,
    and neither names the other's holder (PostgreSQL advisory keys are per database, and
    pg_locks lists every database's)."""
    (tmp_path / "other").mkdir()
    with open_backend(case.kind, case.server, request, tmp_path / "other") as other:
        mine, theirs = case.lock(), other.lock()
        assert mine.try_acquire()
        assert theirs.holder() is None
        assert theirs.try_acquire()
        assert_names(mine.holder(), pid=PID, case=case, conn_id=connection_id(mine))
        mine.verify()
        theirs.verify()


@pytest.mark.parametrize("case", [("file", "sqlite")], indirect=True, ids=["file-sqlite"])
def test_the_sqlite_file_lock_serialises_every_key_of_a_database_file(case: Backend) -> None:
    """The SQLite file lock is per database file, not per key, because SQLite has a single
    writer (two apps migrating one file at once would hit 'database is locked')."""
    billing = LockKey.for_version_table("billing_version", None, None)
    app, other_app = case.lock(), case.lock(billing)
    assert app.try_acquire()
    assert returns_promptly(other_app.try_acquire) is False
    assert_names(other_app.holder(), pid=PID, case=case)
    app.release()
    assert other_app.try_acquire()


# -- choosing a backend -------------------------------------------------------------------


@pytest.mark.parametrize("case", [("table", "sqlite")], indirect=True, ids=["table-sqlite"])
def test_a_lease_taken_again_while_held_keeps_one_heartbeat(case: Backend) -> None:
    """try_acquire on a lease this process holds renews it; it must not start a second
    heartbeat thread (release stops one, and the other would keep renewing a freed lease)."""
    lock = case.lock()

    def heartbeats() -> int:
        return sum(t.name == "herd-lease" and t.is_alive() for t in threading.enumerate())

    before = heartbeats()
    assert lock.try_acquire() and lock.try_acquire()
    assert heartbeats() == before + 1
    lock.release()
    eventually(lambda: heartbeats() == before, "the heartbeat stops on release")
    assert case.lock().try_acquire()


def test_an_unknown_lock_kind_is_refused_with_the_choices() -> None:
    """An unknown lock kind is a ConfigurationError naming it and listing the valid kinds."""
    with pytest.raises(ConfigurationError) as err:
        choose("zookeeper", "postgresql")
    message = str(err.value)
    assert "'zookeeper'" in message
    assert all(kind in message for kind in KINDS)


def test_advisory_on_sqlite_is_refused_with_what_sqlite_offers(tmp_path: Path) -> None:
    """Asking for an advisory lock on SQLite is an UnsupportedDialectError naming what SQLite
    offers (file, table), raised by upgrade() before it touches the database."""
    with pytest.raises(UnsupportedDialectError) as err:
        choose("advisory", "sqlite")
    message = str(err.value)
    assert "'advisory'" in message and "sqlite" in message
    assert "file" in message and "table" in message
    assert choose("auto", "sqlite") == "file"
    assert choose("auto", "postgresql") == "advisory"
    assert choose("table", "sqlite") == "table"

    import alembic_herd
    from conftest import PROJECTS

    database = tmp_path / "app.db"
    with pytest.raises(UnsupportedDialectError):
        alembic_herd.upgrade(str(PROJECTS / "herdset" / "alembic.ini"),
                             url=f"sqlite:///{database}", lock="advisory")
    assert not database.exists()
