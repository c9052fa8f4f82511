"""Waking waiters when the leader commits: PostgreSQL's LISTEN/NOTIFY over polling.

On PostgreSQL with psycopg 3, a waiting replica LISTENs on a channel named after the lock
key, and between two looks it blocks on the connection's notifications instead of
sleeping; the leader NOTIFYs (on herd's own autocommit connection) after a revision is
committed (an intermediate one at most every :data:`~._defaults.NOTIFY_EVERY` seconds, the
last one at once), and once more when it has released the lock. A notification ends the
pause at once, so a waiter sees the new heads within a round trip of the leader's commit;
without one the pause lasts its backoff, capped at :data:`~._defaults.LISTEN_POLL_INTERVAL`
(a few seconds: the load of a long migration stays low).

Notification only accelerates: a NOTIFY that never arrives (a reconnect, a leader killed
before it could notify) leaves the waiter on its polling backoff, which still sees the
heads move or the lock come free. Other backends, and other PostgreSQL drivers, just poll.

A pooler in transaction mode (PgBouncer) loses LISTEN: it runs on whichever server session
the pool lends, and notifications never reach this client, so a waiter there would wake
only at its next poll, seconds later. Before listening the waiter compares the backend pid
the server announced at startup with ``pg_backend_pid()`` (a pooler announces its own, as
the advisory lock's refusal checks); through a pooler it does not LISTEN and polls on a
shorter backoff, :data:`~._defaults.POOLED_POLL_INTERVAL` (one cheap statement per look; the
trade-off between its load and its delay is told there).

The leader notifies as soon as its last revision has committed, before its own bookkeeping
and its release: the waiters verify the heads (one statement) and return meanwhile. A
waiter LISTENs only once its first try at the lock has failed, after it read the heads: a
leader that committed in between notified nobody it could reach, so the pause right after
LISTEN ends at once and the look after it re-reads the heads (LISTEN, then look: the usual
order that loses nothing).
"""

from __future__ import annotations

import inspect
import random
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tenacity import wait_exponential

from . import _defaults as defaults
from ._polling import FIRST_PAUSE, Sleep, Wait
from .locks import LockKey

_NOTIFY = sa.text("SELECT pg_notify(:c, '')")
_BACKEND_PID = sa.text("SELECT pg_backend_pid()")


def channel(key: LockKey) -> str:
    """The channel of ``key``: an identifier that needs no quoting (``herd_`` + 16 hex)."""
    return f"herd_{key.as_int64() & 0xFFFFFFFFFFFFFFFF:016x}"


def _notifying_driver(conn: Connection) -> Any | None:
    """psycopg 3's connection under ``conn`` when it can block on notifications with a
    timeout (``notifies(timeout=, stop_after=)``, psycopg 3.2+); otherwise ``None``."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return None
    raw = conn.connection.driver_connection
    notifies = getattr(raw, "notifies", None)
    if notifies is None or "timeout" not in inspect.signature(notifies).parameters:
        return None
    return raw


class Wakeup(Sleep):
    """A waiter's pause between two looks: on a connection that LISTENs, until a
    notification or the backoff's end; elsewhere a plain jittered sleep.

    :attr:`notified` says whether the last pause ended on a notification, :attr:`news`
    whether the look after it must read what only a notification could have changed (the
    look after a silent pause may skip it)."""

    def __init__(self, conn: Connection, key: LockKey) -> None:
        self.notified = False
        self.caught_up = False
        """The last pause was the one right after LISTEN: it ends at once, and the look after
        it reads what a notification would tell (one sent before LISTEN is lost: a leader
        that committed between this replica's first look and its LISTEN)."""
        self.pooled = False
        """The connection goes through a pooler: no LISTEN, a shorter polling backoff."""
        self._conn, self._key = conn, key
        self._raw: Any | None = None
        self._started = False
        self._catch_up = False

    def start(self) -> None:
        """Tell a pooler, and LISTEN on a direct connection; once, when the first pause is
        due (a replica that never waits, the leader that takes the lock at once, or a
        replica that finds the database current, sends neither statement). A notification
        sent before it is lost, which notification may be: the first pauses are short."""
        if self._started:
            return
        self._started = True
        raw = _notifying_driver(self._conn)
        if raw is None:
            return
        reported = getattr(getattr(raw, "info", None), "backend_pid", None)
        if reported is not None and reported != self._conn.scalar(_BACKEND_PID):
            self.pooled = True
            return
        self._conn.execute(sa.text(f"LISTEN {channel(self._key)}"))
        self._raw = raw
        self._catch_up = True

    @property
    def listening(self) -> bool:
        return self._raw is not None

    @property
    def news(self) -> bool:
        """Whether the next look must re-read the heads (and the attempt log): a notification
        ended the pause, or LISTEN has just begun, or this connection does not listen."""
        return self.notified or self.caught_up or not self.listening

    def waits(self, cap: float) -> Wait:
        # a notification ends the pause early: the pause itself need not be short, and
        # a jitter of [3/4, 1] keeps the herd's fallback polls apart without short ones.
        # Through a pooler polling is the only way to learn: often enough to be prompt
        listened = wait_exponential(multiplier=FIRST_PAUSE, max=defaults.LISTEN_POLL_INTERVAL)
        pooled = wait_exponential(multiplier=FIRST_PAUSE, max=defaults.POOLED_POLL_INTERVAL)
        plain = super().waits(cap)

        def wait(state: Any) -> float:
            self.start()  # the first pause is due: only now is this replica a waiter
            if self.pooled:
                return float(pooled(state) * random.uniform(defaults.POOLED_POLL_JITTER, 1.0))
            if self.listening:
                return float(listened(state) * random.uniform(0.75, 1.0))
            return float(plain(state))

        return wait

    def __call__(self, seconds: float) -> None:
        self.start()
        self.notified = False
        self.caught_up, self._catch_up = self._catch_up, False
        if self._raw is None:
            time.sleep(seconds)
            return
        if self.caught_up:  # LISTEN has just begun: look again at once, without a pause
            return
        import psycopg

        try:
            # queued notifications (received during another statement) come first
            self.notified = any(True for _ in self._raw.notifies(timeout=seconds, stop_after=1))
        except psycopg.Error:  # the connection broke: the next statement says so
            self._raw = None
            return
        if self.notified:  # drain a burst, so that it wakes this waiter only once
            for _ in self._raw.notifies(timeout=0):
                pass


def notify(conn: Connection, key: LockKey) -> None:
    """Wake the waiters on ``key`` (PostgreSQL; nothing elsewhere): one autocommit
    statement, delivered at once."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"c": channel(key)})
