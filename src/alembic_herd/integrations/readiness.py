"""A readiness probe: is the database reachable and at the scripts' heads?

::

    from alembic_herd.integrations.readiness import ReadinessProbe, ASGIReadiness

    probe = ReadinessProbe("alembic.ini", url=os.environ["DATABASE_URL"])
    probe.probe()   # {"status": "ready", "current": ["0005"], "expected": ["0005"], ...}
    app = ASGIReadiness(probe)          # or WSGIReadiness(probe): 200 ready, 503 not ready

Kubernetes calls a readiness endpoint every few seconds on every replica, so a probe must be
cheap. The Alembic project (``alembic.ini``, env.py, the revision files) is loaded **once**,
when the probe is built; the expected heads and the revision graph stay in memory. Each call
then costs **one** ``SELECT version_num FROM <version table>`` on a small pool of one
connection (no pre-ping, short connect and statement timeouts). The answer never contains
the database URL, and driver messages go to the log (password masked), not to the body.

This module needs nothing beyond alembic-herd's core.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .. import _defaults as defaults
from .._database import create_engine, display, driver_message, error_code
from .._environment import load_environment
from .._graph import judge
from .._heads import version_table as _version_table
from .._phases import Phase, check_unmarked, cut_at_contract
from ..errors import HerdError

__all__ = ["ASGIReadiness", "ReadinessProbe", "WSGIReadiness"]

log = logging.getLogger("alembic_herd.readiness")

READY = "ready"
NOT_READY = "not ready"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_Compared = tuple[tuple[str, ...], tuple[str, ...], str | None, tuple[str, ...]]
"""(pending, ahead, why a database ahead of the code is not ready or None, left for the
contract step)."""

# "the version table does not exist (yet)": a fresh database, not an outage
_PG_MISSING = {"42P01", "3F000"}  # undefined_table, invalid_schema_name
_MYSQL_MISSING = {1146}  # ER_NO_SUCH_TABLE


class ReadinessProbe:
    """Compares the database's heads with the scripts' heads, one query per call.

    ``config`` is an Alembic ``Config`` or the path of an alembic.ini; ``url`` overrides its
    database URL (see :func:`alembic_herd.upgrade` for the precedence). ``target`` names the
    revisions the code expects (default ``heads``: every head of the scripts).
    A database at revisions this code does not know (a newer release mid-way through a
    rolling deploy) is ready when herd's revision graph shows they are all expand (one more
    query, once per set of heads), not ready otherwise; ``allow_ahead`` reports it ready
    regardless. ``unmarked_phase`` is what a revision without ``herd_phase`` counts as.
    ``expand_only`` (for pods started with ``herd run --expand-only``) counts the revisions
    from the first contract one on as left for the contract step, not pending: the pod is
    ready once the expand revisions before it are applied (``"left"`` lists the rest).
    ``statement_timeout`` (PostgreSQL: a startup ``options`` parameter; set it to ``None``
    behind a pooler that refuses startup options) and ``connect_timeout`` are in seconds.
    """

    def __init__(
        self,
        config: Config | str | os.PathLike[str],
        *,
        url: str | URL | None = None,
        target: str = "heads",
        version_table: str | None = None,
        version_table_schema: str | None = None,
        allow_ahead: bool = False,
        connect_timeout: float = 2.0,
        statement_timeout: float | None = 2.0,
        unmarked_phase: Phase = defaults.UNMARKED_PHASE,
        history_table: str = defaults.HISTORY_TABLE,
        expand_only: bool = False,
    ) -> None:
        env = load_environment(config, url=url, version_table=version_table,
                               version_table_schema=version_table_schema)
        assert env.url is not None  # load_environment raises without one
        self._env = env
        self.url = env.url
        self.version_table = env.qualified_version_table
        self.target = target
        self.expected: tuple[str, ...] = tuple(sorted(env.target_revisions(target)))
        self.allow_ahead = allow_ahead
        check_unmarked(unmarked_phase)
        self.unmarked_phase = unmarked_phase
        self.expand_only = expand_only
        self.history_table = history_table
        self._query = sa.select(_version_table(env).c.version_num)
        self._pending_cache: dict[tuple[str, ...], _Compared] = {}
        self._cache_lock = threading.Lock()
        self._last: str | None = None
        self.engine: Engine = _probe_engine(env.url, connect_timeout, statement_timeout)

    # -- the probe ------------------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        """One check, as JSON-ready data::

            {"status": "ready" | "not ready",
             "current": [...],        # the database's heads; null when unreachable
             "expected": [...],       # the scripts' heads (the target)
             "pending": 0,            # revisions an upgrade would apply
             "version_table": "app.alembic_version",
             "ahead": [...],          # only when the database has revisions the code lacks
             "left": [...],           # only with expand_only: held for the contract step
             "reason": "..."}         # only when not ready

        Never raises for a database problem: that is a "not ready" answer.
        """
        try:
            current = self._read()
        except _Unreachable as exc:  # current: unknown (None), not empty
            return self._report(NOT_READY, None, 0, (), reason=str(exc))
        try:
            pending, ahead, refusal, left = self._compare(current)
        except HerdError as exc:  # heads the revision graph cannot reach the target from
            return self._report(NOT_READY, current, 0, (), reason=str(exc))
        except _Unreachable as exc:
            return self._report(NOT_READY, current, 0, (), reason=str(exc))
        if refusal is not None:
            return self._report(NOT_READY, current, 0, ahead, reason=refusal)
        if pending:
            state = "empty database" if not current else "migrations pending"
            return self._report(NOT_READY, current, len(pending), ahead, left,
                                reason=f"{state}: {len(pending)} revision(s) to apply")
        return self._report(READY, current, 0, ahead, left)

    async def aprobe(self) -> dict[str, Any]:
        """:meth:`probe` in a worker thread, for async frameworks (never blocks the loop)."""
        result: dict[str, Any] = await run_in_thread(self.probe)
        return result

    @staticmethod
    def is_ready(result: dict[str, Any]) -> bool:
        return result.get("status") == READY

    @staticmethod
    def http_status(result: dict[str, Any]) -> int:
        """200 when ``result`` says ready, 503 otherwise."""
        return 200 if result.get("status") == READY else 503

    def close(self) -> None:
        """Close the probe's pooled connection."""
        self.engine.dispose()

    # -- internals ------------------------------------------------------------------------

    def _read(self) -> tuple[str, ...]:
        """The version table's rows: exactly one statement on the common path."""
        for attempt in range(2):
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(self._query).scalars().all()
                return tuple(sorted(str(r) for r in rows))
            except DBAPIError as exc:
                if _missing_table(exc):
                    return ()
                # a pooled connection the server closed (restart, idle timeout): the pool
                # has discarded it, so one more try on a new connection tells the truth
                if exc.connection_invalidated and attempt == 0:
                    continue
                raise _Unreachable(exc, self.url) from exc
            except SQLAlchemyError as exc:  # pool timeout: every connection busy
                raise _Unreachable(exc, self.url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _compare(self, current: tuple[str, ...]) -> _Compared:
        """(pending, ahead, why not ready when ahead) for the database's heads, cached. In
        memory, except for a database ahead of the code: then herd's revision graph says
        whether this code may run on it."""
        cached = self._pending_cache.get(current)
        if cached is not None:
            return cached
        ahead = tuple(h for h in current if not self._env._known(h))
        # a database ahead of the code: what it lacks cannot be known from these scripts
        pending = () if ahead else self._env.pending(current, self.target)
        left: tuple[str, ...] = ()
        if pending and self.expand_only:
            pending, left = cut_at_contract(self._env.script, pending,
                                            unmarked=self.unmarked_phase)
        refusal = None
        if ahead and not self.allow_ahead:
            try:
                with self.engine.connect() as conn:
                    verdict = judge(conn, self._env, current, ahead, target=self.target,
                                    unmarked=self.unmarked_phase,
                                    history_table=self.history_table)
            except SQLAlchemyError as exc:
                raise _Unreachable(exc, self.url) from exc
            ahead = verdict.revisions
            refusal = str(verdict.error) if verdict.error is not None else None
        with self._cache_lock:
            if len(self._pending_cache) > 64:
                self._pending_cache.clear()
            self._pending_cache[current] = (pending, ahead, refusal, left)
        return pending, ahead, refusal, left

    def _report(self, status: str, current: tuple[str, ...] | None, pending: int,
                ahead: tuple[str, ...], left: tuple[str, ...] = (), *,
                reason: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "status": status,
            "current": None if current is None else list(current),
            "expected": list(self.expected),
            "pending": pending,
            "version_table": self.version_table,
        }
        if ahead:
            result["ahead"] = list(ahead)
        if left:
            result["left"] = list(left)
        if reason:
            result["reason"] = reason
        summary = f"{status}: {reason}" if reason else status
        if summary != self._last:  # log changes of state, not every probe
            self._last = summary
            level = logging.INFO if status == READY else logging.WARNING
            log.log(level, "readiness of %s: %s (database at %s, scripts at %s)",
                    display(self.url), summary,
                    "unknown" if current is None else ", ".join(current) or "base",
                    ", ".join(self.expected))
        return result


class _Unreachable(Exception):
    """The database could not answer; the message is safe to publish (no URL, no host)."""

    def __init__(self, exc: BaseException, url: URL) -> None:
        kind = type(getattr(exc, "orig", None) or exc).__name__
        super().__init__(f"database unreachable ({kind})")
        log.debug("readiness query failed: %s", driver_message(exc, url))


def _missing_table(exc: DBAPIError) -> bool:
    code = error_code(exc)
    if code is not None:
        return code in _PG_MISSING | _MYSQL_MISSING
    return "no such table" in str(exc.orig).lower()


def _probe_engine(url: URL, connect_timeout: float, statement_timeout: float | None) -> Engine:
    """A pool of one autocommit connection with short timeouts and no pre-ping."""
    return create_engine(url, application_name="herd readiness",
                         connect_timeout=connect_timeout, statement_timeout=statement_timeout,
                         pool={"pool_size": 1, "max_overflow": 0, "pool_pre_ping": False,
                               "pool_recycle": 1800,
                               "pool_timeout": connect_timeout + (statement_timeout or 0.0),
                               # autocommit: nothing to roll back on the way back to the pool
                               "pool_reset_on_return": None})


async def run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run blocking ``fn`` in a worker thread: anyio's when available, else asyncio's."""
    try:
        import anyio.to_thread
    except ImportError:  # pragma: no cover - starlette/fastapi bring anyio
        return await asyncio.to_thread(fn)
    return await anyio.to_thread.run_sync(fn)


def _body(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":")).encode()


_HEADERS = [("content-type", "application/json"), ("cache-control", "no-store")]


class WSGIReadiness:
    """A WSGI application answering every GET/HEAD with the probe's JSON: 200 or 503."""

    def __init__(self, probe: ReadinessProbe) -> None:
        self.probe = probe

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed",
                           [("allow", "GET, HEAD"), ("content-length", "0")])
            return [b""]
        result = self.probe.probe()
        body = _body(result)
        code = self.probe.http_status(result)
        reason = "OK" if code == 200 else "Service Unavailable"
        start_response(f"{code} {reason}",
                       [*_HEADERS, ("content-length", str(len(body)))])
        return [b"" if method == "HEAD" else body]


class ASGIReadiness:
    """An ASGI application answering every GET/HEAD with the probe's JSON: 200 or 503.

    The query runs in a worker thread, so the event loop never blocks on the database.
    It also answers the ``lifespan`` protocol, so it can be served on its own.
    """

    def __init__(self, probe: ReadinessProbe) -> None:
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.probe.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        result = await self.probe.aprobe()
        body = _body(result)
        headers = [(k.encode(), v.encode()) for k, v in _HEADERS]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.probe.http_status(result),
                    "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
