"""The fast lane's waiting room: a replica that finds the database behind waits with the
raw driver while another replica of the same project migrates, instead of starting the
normal path (SQLAlchemy, Alembic, env.py: most of a waiting replica's CPU in a stampede).

The replicas of one project agree on a *gate*: a session-level advisory lock (PostgreSQL
``pg_try_advisory_lock``, MySQL/MariaDB ``GET_LOCK``) keyed on the lane's fingerprint
(:func:`._fastlane.fingerprint`: the project's files, herd's settings, the URL without its
password). The gate elects nothing and guards nothing: herd's own lock, taken by the
normal path, does. It only says "a replica of this very project is already on the normal
path", so that the others need not start it too.

* The first replica takes the gate and keeps it while its normal path runs (migrating, or
  waiting for a leader the lane cannot see). When the normal path has written the lane's
  stamp (the database at the script heads) it releases the gate (:func:`release`);
  otherwise the gate ends with its process.
* The others wait on the gate itself (PostgreSQL: a *shared* lock request, so that all of
  them are granted at once; MySQL: ``GET_LOCK`` with a timeout, then released at once):
  the server wakes them the moment it is released, with no polling. Then they read the
  stamp and the version table, exactly as the lane does at head: at the script heads they
  answer as a waiting replica does; anything else (the holder failed, was killed, could
  not write a stamp, the timeout came) sends them all to the normal path at once, which
  decides as it always did. They hand it what they saw before waiting (the attempt log's
  baselines), so that a leader's failure is reported as the failure of the leader they
  waited for (exit 9) rather than tried again.

A connection through a pooler in transaction mode cannot hold a session lock: the lane
checks, in the gate's first statement, that it runs on the backend the server announced
(as herd's advisory lock does), and falls back when it does not. Stdlib and the raw driver
only, like :mod:`._fastlane`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _defaults as defaults

if TYPE_CHECKING:
    from ._fastlane import Plan, _Db

_RECENT = 3
"""Attempt-log rows read with each waiting report (as the normal path's waiter reads)."""
_LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE when ``lock_timeout`` ends a lock request."""

_HELD: dict[str, _Db] = {}
"""``{"gate": connection}`` while this process holds its gate (its normal path runs)."""

_STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def application_name() -> str:
    """How herd's lock holders describe themselves (:meth:`.errors.Holder.tag`), so that a
    replica waiting on the gate names its holder as a lock waiter names the lock's."""
    from .errors import Holder

    return Holder.tag(os.getpid(), _STARTED, socket.gethostname())


def gate_key(fingerprint: str) -> int:
    """The gate's advisory lock key (a signed 64-bit integer) for ``fingerprint``."""
    digest = hashlib.blake2b(f"herd:gate:{fingerprint}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def gate_name(fingerprint: str) -> str:
    """The gate's ``GET_LOCK`` name (MySQL/MariaDB: at most 64 characters)."""
    return f"herd:gate:{gate_key(fingerprint) & 0xFFFFFFFFFFFFFFFF:016x}"


def release() -> None:
    """Release this process's gate, if it holds one: the normal path calls it once the
    stamp is written (closing the session frees its session lock at once)."""
    db = _HELD.pop("gate", None)
    if db is not None:
        db.close()


def held(db: _Db) -> bool:
    """Whether ``db`` holds this process's gate (then it stays open)."""
    return _HELD.get("gate") is db


class Gate:
    def __init__(self, db: _Db, fingerprint: str) -> None:
        self.db = db
        self.key = gate_key(fingerprint)
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        self.classid, self.objid = unsigned >> 32, unsigned & 0xFFFFFFFF
        self.name = gate_name(fingerprint)
        self._timeout_ms: int | None = None

    def take(self) -> tuple[bool | None, str | None]:
        """(whether this connection took the gate, the holder's description when it did
        not); ``None`` instead of a bool: a pooler runs the statements elsewhere."""
        db = self.db
        if db.backend == "postgresql":
            reported = _announced_pid(db.conn)
            if reported is None:
                return None, None
            got, holder, pid, client = db.rows(
                "SELECT CASE WHEN pg_backend_pid() = %s THEN pg_try_advisory_lock(%s) END, "
                "a.application_name, a.pid, a.client_addr::text "
                "FROM (SELECT 1) AS one LEFT JOIN pg_locks l ON l.locktype = 'advisory' "
                "AND l.granted AND l.mode = 'ExclusiveLock' AND l.classid = %s "
                "AND l.objid = %s AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid",
                (reported, self.key, self.classid, self.objid))[0]
            if got is None:
                return None, None
            return bool(got), None if got else _describe_pg(holder, pid, client)
        got, conn_id = db.rows("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)",
                               (self.name, self.name))[0]
        if got is None:
            return None, None
        if got:
            return True, None
        host = db.rows("SELECT host FROM information_schema.processlist WHERE id = %s",
                       (conn_id,)) if conn_id is not None else []
        where = f" from {host[0][0]}" if host else ""
        return False, f"server connection {conn_id}{where}" if conn_id is not None else None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the gate to come free; whether it did (then this
        connection holds nothing: it let go at once)."""
        db = self.db
        if db.backend == "postgresql":
            ms = max(1, int(seconds * 1000))
            if ms != self._timeout_ms:
                db.rows(f"SELECT set_config('lock_timeout', '{ms}ms', false)")
                self._timeout_ms = ms
            try:
                db.rows("SELECT pg_advisory_lock_shared(%s), pg_advisory_unlock_shared(%s)",
                        (self.key, self.key))
            except db.errors as exc:
                if db.code(exc) == _LOCK_NOT_AVAILABLE:
                    return False
                raise
            return True
        got = db.rows("SELECT GET_LOCK(%s, %s)", (self.name, max(0.001, seconds)))[0][0]
        if got is None:
            raise OSError("GET_LOCK returned NULL")
        if got:
            db.rows("SELECT RELEASE_LOCK(%s)", (self.name,))
        return bool(got)


def _announced_pid(conn: Any) -> int | None:
    """The backend pid the server announced at startup (psycopg 3 or psycopg2)."""
    info = getattr(conn, "info", None)
    pid = getattr(info, "backend_pid", None)
    if pid is None and hasattr(conn, "get_backend_pid"):
        pid = conn.get_backend_pid()
    return int(pid) if pid else None


def _describe_pg(name: str | None, pid: int | None, client: str | None) -> str | None:
    """What a lock waiter says of the session holding the gate (``None``: nobody)."""
    from .errors import Holder

    return None if pid is None else Holder.from_application_name(name, pid, client).describe()


def _history(db: _Db, p: Plan) -> str:
    """The attempt log, quoted, where the settings put it (as :func:`._fastlane.plan` read
    its schema)."""
    from ._fastlane import _quote

    name = (p.settings["history_table"] or defaults.HISTORY_TABLE).split(".")[-1]
    return _quote(db.backend, p.herd_schema, name)


def baselines(db: _Db, p: Plan) -> dict[str, int] | None:
    """Per scope of the attempt log, the row after which a failure is news (what
    :meth:`._history.History.baseline` reads), as it is before this replica waits; ``{}``
    when there is no attempt log yet, ``None`` when it cannot be read (the normal path
    then reads its own)."""
    from ._fastlane import _MISSING

    table = _history(db, p)
    try:
        rows = db.rows(f"SELECT scope, MIN(CASE WHEN status = 'running' THEN id END), "
                       f"MAX(id) FROM {table} GROUP BY scope")
    except db.errors as exc:
        if db.code(exc) in _MISSING:
            return {}  # no attempt log yet (a fresh database): every failure in it is news
        return None
    return {str(scope): int(running) - 1 if running is not None else int(last or 0)
            for scope, running, last in rows}


@dataclass(frozen=True)
class _Row:
    status: str
    error: str | None


def _retrying(db: _Db, p: Plan) -> str | None:
    """'leader retrying: attempt k of n, ...' when the attempt log's newest rows say so, as a
    waiter on the normal path reports it (the lane does not know the version table's
    scope: it reads the newest rows of any)."""
    from ._waitnotes import retrying

    table = _history(db, p)
    try:
        found = db.rows(  # an attempt in progress counts as its newest row (History.recent)
            f"SELECT status, error FROM {table} WHERE status <> 'running' OR id = "
            f"(SELECT MAX(id) FROM {table}) ORDER BY id DESC LIMIT {_RECENT}")
    except db.errors:
        return None
    return retrying([_Row(str(status), error) for status, error in found])


def enter(p: Plan, db: _Db, debug: Any) -> tuple[dict[str, int] | None, float] | None:
    """Take the gate (then keep it and return ``None``: this replica goes on to the normal
    path), or wait for its holder and answer when the database reached its heads (never
    returns then). Returns what the normal path needs when the wait ends otherwise: the
    attempt log's baselines and when the wait began (``time.monotonic()``)."""
    from ._durations import format_seconds, to_seconds
    from ._fastlane import Fallback, _answer, _Log, at_head

    gate = Gate(db, p.key)
    got, holder = gate.take()
    if got is None:
        raise Fallback("the gate needs a session of its own (a pooler?)")
    if got:
        _HELD["gate"] = db
        debug("took the gate: this replica goes on to the normal path")
        return None
    began = time.monotonic()
    seen = baselines(db, p)
    s = p.settings
    timeout = s["lock_timeout"]
    total = (to_seconds(str(timeout), name="lock timeout") if timeout is not None
             else defaults.LOCK_TIMEOUT)
    secrets = [x for x in (p.app.password, p.herd.password) if x]
    log = _Log(s["log_format"], quiet=bool(s["quiet"]), secrets=secrets)
    who = holder or "another replica"
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            left = total - (time.monotonic() - began)
            retrying = _retrying(db, p)
            log.event("waiting", f"waiting for {who}, on this project's gate, to bring the "
                      f"database to its heads; {format_seconds(time.monotonic() - began)} so "
                      f"far, giving up in {format_seconds(max(0.0, left))}"
                      f"{'; ' + retrying if retrying else ''}", holder=holder,
                      retrying=retrying)
            if left <= 0:
                debug("fell back: the lock timeout came in the waiting room")
                return seen, began
            if gate.wait(min(left, defaults.REPORT_EVERY)):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stamp, _state = at_head(p, db)
    if stamp is None:
        debug("fell back: the gate came free without the database at its heads")
        return seen, began
    waited = time.monotonic() - began
    heads = ", ".join(stamp.heads)
    log.event("waited", f"database brought to {heads} by {who}; waited "
              f"{format_seconds(waited)}", heads=list(stamp.heads), waited=waited)
    debug("answered after waiting")
    _answer(p, stamp, _executable(p), done=f"waited {waited:.2f} s for {who}; database at "
            f"{heads}")


def _executable(p: Plan) -> str | None:
    import shutil

    command = p.settings.command
    return shutil.which(command[0]) if p.settings.verb == "run" and command else None


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT in the waiting room: nothing is held, nothing to clean up; say so as
    the normal path does and exit ``128 + signal``."""
    name = signal.Signals(signum).name
    os.write(2, f"herd: error: stopped by {name} while waiting for the migration\n".encode())
    os._exit(128 + signum)
