"""SQLite: an exclusive ``flock`` on a sidecar file next to the database file.

SQLite has no session locks; the database file's own locks are held only for the length
of a transaction. ``flock(LOCK_EX | LOCK_NB)`` on ``<database>.herd-lock`` is a try-lock the
kernel releases when the process dies. The holder writes its host, pid and start time
into the file so waiters can name it.
"""

from __future__ import annotations

import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Connection

from .._database import HOST
from ..errors import ConfigurationError, Holder, LockLostError
from . import Lock, LockKey


def sidecar_path(conn: Connection) -> Path:
    database = conn.engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ConfigurationError(
            "sqlite database is in memory; herd coordinates processes through a database "
            "file - use sqlite:///path/to/file.db"
        )
    return Path(database).resolve().with_name(Path(database).name + ".herd-lock")


class FileLock(Lock):
    kind = "file"

    def __init__(self, conn: Connection, key: LockKey) -> None:
        self.key = key
        self.path = sidecar_path(conn)
        self._fd: int | None = None

    def describe(self) -> str:
        return f"lock {str(self.path)!r} (sqlite file)"

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not self._is_current(fd):  # the file was replaced before we locked it
            os.close(fd)
            return False
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {since} {HOST}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def verify(self) -> None:
        if self._fd is None:
            raise LockLostError(f"{self.describe()} is not held by this process")
        if not self._is_current(self._fd):
            raise LockLostError(
                f"{self.describe()} was deleted or replaced while this process held it, so "
                "another process can lock the new file; stopped before the next revision - "
                "run herd again")

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at :attr:`path` (a flock is on the inode)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def holder(self) -> Holder | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        if not text or self._is_free():
            return None
        pid, since, host = ([*text.split(" ", 2), "", ""])[:3]
        try:
            started = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            started = None
        return Holder(host=host or None, pid=int(pid) if pid.isdigit() else None, since=started)

    def _is_free(self) -> bool:
        if self._fd is not None:
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True
