"""The fast lane: ``herd check`` / ``migrate`` / ``run`` at head without SQLAlchemy, Alembic
or env.py (every restart of every pod).

It may answer one thing only: "the database is at the script heads, nothing to do". Any
doubt (an option it does not know, a URL it cannot read, no stamp, a stamp of other inputs,
a connection error, a version table elsewhere than stamped) raises :class:`Fallback`, and
the normal path runs as if the lane did not exist, producing its own output and errors.

**The stamp.** When the normal path (started from the ``herd`` command) has found the
database at the script heads, it records in herd's revision graph (``herd_revisions``; one
row, scope :data:`SCOPE`, revision = the fingerprint) where env.py's version table really
is (schema-qualified, as ``Environment.locate`` learnt it), how herd names it, and the
heads. It never creates a table for this: the row is written only where the graph already
exists and this user may write it (:func:`record`).

**The fingerprint** (:func:`fingerprint`) hashes what decides the normal path's answer:
alembic.ini, the nearest pyproject.toml, every file under the script location and every
version location (``__pycache__`` aside), herd's settings that name tables, schemas, the
section, ``-x`` arguments and the database (URL without its password), the values of the
environment variables env.py names literally (passwords in URL-like values removed),
herd's version, Alembic's ``__init__`` and :data:`FORMAT`. The assumption that remains:
env.py's choice of version table depends on nothing else (not on another module's
environment variables, the time, or a file outside those hashed). ``HERD_FAST_LANE=0``
switches the lane off.

**The lane** (:func:`main`) reads the verb's options the way click would (command line >
environment > ``[tool.herd]`` > defaults, validating every value it accepts), resolves the
URL without env.py (``--url``/``HERD_DATABASE_URL``/``DATABASE_URL`` or a static
``sqlalchemy.url``), connects with the raw driver (psycopg 3 / psycopg2, pymysql, sqlite3),
reads the stamp and the version table at the stamped place, and, when they agree, prints
what the normal path prints at head and exits 0 (``herd run`` execs its command).

Its parts: :mod:`._laneargs` (the options), :mod:`._laneproject` (the project files, the
fingerprint, the URL), this module (the database, the answer, the stamp) and
:mod:`._lanewait` (the waiting room, when the database is behind).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from . import _defaults as defaults
from ._codes import DENIED, NO_SUCH_SCHEMA, NO_SUCH_TABLE
from ._laneargs import Fallback, Settings, parse
from ._laneproject import FORMAT, USERINFO, Url, fingerprint, parse_url, read_project, resolve_url

__all__ = ["FORMAT", "REQUEST", "SCOPE", "Fallback", "Request", "Settings", "Url", "at_head",
           "console", "fingerprint", "main", "parse", "parse_url", "plan", "record"]

SCOPE = "herd:stamp"
"""The graph's ``scope`` of stamp rows (version tables' scopes are table names)."""
SWITCH = "HERD_FAST_LANE"
"""``HERD_FAST_LANE=0`` (or off/false/no) switches the lane off; stamps are then not
written either."""
CONNECT_TIMEOUT = 3
"""The lane tries once, briefly: on any failure the normal path connects with its retries."""

_GRAPH_TABLE = defaults.GRAPH_TABLE
_HISTORY_TABLE = defaults.HISTORY_TABLE


@dataclass(frozen=True)
class Request:
    """What the normal path needs to write a stamp the lane will find (:func:`record`)."""

    fingerprint: str
    server: tuple[Any, ...]
    """(backend, user, host, port, database) of herd's connection, as the lane made it."""
    herd_schema: str | None
    """Where the lane looks for herd's graph (from the settings alone)."""
    state: str
    """What the lane found: 'writable', 'present' (privilege unknown), 'readonly',
    'missing' (no graph table yet), 'unknown' (no connection)."""
    baselines: dict[str, int] | None = None
    """After waiting in :mod:`._lanewait`: the attempt log's baselines before the wait."""
    waiting_since: float | None = None
    """After waiting in :mod:`._lanewait`: when the wait began (``time.monotonic()``); the
    normal path's lock timeout counts from it."""


REQUEST: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "alembic_herd_stamp_request", default=None)


def switched_off(environ: Mapping[str, str]) -> bool:
    return environ.get(SWITCH, "").strip().lower() in ("0", "off", "false", "no")


# -- the database -------------------------------------------------------------------------


def _quote(backend: str, *names: str | None) -> str:
    q = "`" if backend == "mysql" else '"'
    return ".".join(f"{q}{n.replace(q, q + q)}{q}" for n in names if n)


class _Db:
    """One raw DB-API connection, autocommit."""

    module: Any

    def __init__(self, url: Url) -> None:
        self.backend = url.backend
        try:
            if url.backend == "postgresql":
                self.module, self.conn = _pg_connect(url)
                self.errors: tuple[type[BaseException], ...] = (self.module.Error,)
            elif url.backend == "mysql":
                import pymysql

                self.module = pymysql
                kwargs: dict[str, Any] = {"autocommit": True,
                                          "connect_timeout": CONNECT_TIMEOUT,
                                          "database": url.database, "port": url.port or 3306}
                if url.user:
                    kwargs["user"] = url.user
                if url.password is not None:
                    kwargs["password"] = url.password
                kwargs["host"] = url.host or "localhost"
                kwargs.update(dict(url.query))
                self.conn = pymysql.connect(**kwargs)
                self.errors = (pymysql.Error,)
            else:
                import sqlite3

                self.module = sqlite3
                path = Path(url.database or "")
                if not path.is_file():
                    raise Fallback("no sqlite file")
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                            isolation_level=None, timeout=5)
                self.errors = (sqlite3.Error,)
        except Fallback:
            raise
        except Exception as exc:  # no driver, refused, unreachable: the normal path says
            raise Fallback("connect") from exc

    @property
    def mark(self) -> str:
        return "?" if self.backend == "sqlite" else "%s"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def code(self, exc: BaseException) -> str | int | None:
        if self.backend == "postgresql":
            return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if self.backend == "mysql":
            return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return str(exc)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _pg_connect(url: Url) -> tuple[Any, Any]:
    from ._lanewait import application_name

    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "dbname": url.database,
                              "application_name": application_name()}
    for key, value in (("user", url.user), ("password", url.password), ("host", url.host),
                       ("port", url.port)):
        if value is not None:
            kwargs[key] = value
    kwargs.update(dict(url.query))
    try:
        import psycopg
    except ImportError:
        import psycopg2  # type: ignore[import-untyped,unused-ignore]

        conn = psycopg2.connect(**kwargs)
        conn.autocommit = True
        return psycopg2, conn
    return psycopg, psycopg.connect(autocommit=True, prepare_threshold=None, **kwargs)


_MISSING = NO_SUCH_TABLE | NO_SUCH_SCHEMA


@dataclass(frozen=True)
class Stamp:
    table: str
    schema: str | None
    display: str
    heads: tuple[str, ...]
    url: str


def read_stamp(db: _Db, herd_schema: str | None, key: str) -> tuple[Stamp | None, str]:
    """The stamp of ``key`` (``None`` when there is none) and what the graph is to this
    user (:attr:`Request.state`)."""
    graph = _quote(db.backend, herd_schema, _GRAPH_TABLE)
    m = db.mark
    try:
        if db.backend == "postgresql":
            row = db.rows(f"SELECT (SELECT parents FROM {graph} WHERE scope = {m} AND "
                          f"revision = {m}), has_table_privilege({m}, 'INSERT')",
                          (SCOPE, key, graph))[0]
            state = "writable" if row[1] else "readonly"
        else:
            found = db.rows(f"SELECT parents FROM {graph} WHERE scope = {m} AND revision = {m}",
                            (SCOPE, key))
            row = (found[0][0] if found else None,)
            state = "present"
    except db.errors as exc:
        code = db.code(exc)
        if code in _MISSING or (isinstance(code, str) and "no such table" in code):
            return None, "missing"
        if code in DENIED:
            return None, "readonly"
        raise Fallback("stamp unreadable") from exc
    if row[0] is None:
        return None, state
    try:
        data = json.loads(row[0])
        stamp = Stamp(str(data["table"]), data["schema"], str(data["display"]),
                      tuple(str(h) for h in data["heads"]), str(data["url"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise Fallback("stamp format") from exc
    return stamp, state


def read_heads(db: _Db, stamp: Stamp) -> tuple[str, ...]:
    table = _quote(db.backend, stamp.schema, stamp.table)
    try:
        return tuple(sorted(str(r[0]) for r in db.rows(f"SELECT version_num FROM {table}")))
    except db.errors as exc:
        raise Fallback("version table") from exc


# -- the lane -----------------------------------------------------------------------------


@dataclass
class Plan:
    settings: Settings
    app: Url
    herd: Url
    url_text: str
    key: str
    herd_schema: str | None


def plan(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> Plan:
    settings = parse(argv, environ, cwd)
    project = read_project(settings, cwd)
    app, herd, text = resolve_url(settings, project)
    history = settings["history_table"] or _HISTORY_TABLE
    parts = history.split(".")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise Fallback("history table")
    herd_schema = parts[0] if len(parts) == 2 else settings["herd_schema"]
    lock = settings["lock"]
    if (lock == "advisory" and herd.backend == "sqlite") or (
            lock == "file" and herd.backend != "sqlite"):
        raise Fallback("lock kind")
    if herd.backend == "sqlite":
        if herd_schema not in (None, "main"):
            raise Fallback("sqlite schema")
        herd_schema = None
    # whether the URL has a password: the stamp keeps the URL as herd displays it, with
    # 'user:***@' or 'user@' (the password itself never enters the fingerprint)
    key = fingerprint(settings, project, environ,
                      [app.server, herd.server, app.query, app.password is not None])
    return Plan(settings, app, herd, text, key, herd_schema)


def at_head(p: Plan, db: _Db | None = None) -> tuple[Stamp | None, str]:
    """The stamp when the database is at its heads (else ``None``), and the graph's state;
    on ``db`` (left open), or on a connection of its own."""
    if db is None:
        if p.herd.backend == "sqlite" and not Path(p.herd.database or "").is_file():
            return None, "missing"  # a new database: its first migration may leave a graph
        own = _Db(p.herd)
        try:
            return at_head(p, own)
        finally:
            own.close()
    stamp, state = read_stamp(db, p.herd_schema, p.key)
    if stamp is None:
        return None, state
    if p.settings["target"] == "head" and len(stamp.heads) != 1:
        raise Fallback("several heads")
    if read_heads(db, stamp) != tuple(sorted(stamp.heads)):
        return None, state
    return stamp, state


def console() -> NoReturn:
    """The ``herd`` console script: the lane, then (when it cannot answer) the normal
    path, :func:`alembic_herd.cli.main`."""
    argv = sys.argv[1:]
    main(argv)
    from .cli import main as normal_path

    normal_path(argv)


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Answer at head and leave (never returns then); otherwise set :data:`REQUEST` for the
    normal path and return."""
    environ = os.environ if environ is None else environ
    debug = environ.get("HERD_FAST_LANE_DEBUG") == "1"
    if switched_off(environ):
        _debug(debug, "off")
        return
    try:
        p = plan(argv, environ, Path.cwd())
    except Exception as exc:
        _debug(debug, f"fell back: {_why(exc)}")
        return
    state = "unknown"
    db: _Db | None = None
    lane: tuple[dict[str, int] | None, float] | None = None
    try:
        if _may_wait(p):
            db = _Db(p.herd)
        stamp, state = at_head(p, db)
    except Exception as exc:
        _debug(debug, f"fell back: {_why(exc)}")
        stamp = None
    else:
        if stamp is None:
            _debug(debug, f"fell back: no stamp at head (herd's graph: {state})")
    if stamp is not None:
        executable = None
        if p.settings.verb == "run":
            command = p.settings.command
            executable = shutil.which(command[0]) if command else None
        if _runnable(p, executable):
            _debug(debug, "answered")
            _answer(p, stamp, executable)
        _debug(debug, "fell back: the normal path refuses these options")
    elif db is not None and state in ("writable", "present", "missing"):
        from . import _lanewait

        try:
            lane = _lanewait.enter(p, db, lambda text: _debug(debug, text))
        except Exception as exc:
            _debug(debug, f"fell back: {_why(exc)}")
    if db is not None:
        from ._lanewait import held

        if not held(db):
            db.close()
    REQUEST.set(Request(p.key, p.herd.server, p.herd_schema, state,
                        baselines=lane[0] if lane else None,
                        waiting_since=lane[1] if lane else None))


def _may_wait(p: Plan) -> bool:
    """Whether this replica, finding the database behind, may wait in :mod:`._lanewait`:
    a verb that migrates (``run --mode wait`` never takes herd's lock), on a server with
    session locks, with options the normal path accepts."""
    s = p.settings
    if p.herd.backend not in ("postgresql", "mysql") or s.verb == "check":
        return False
    if s.verb == "run" and (s["mode"] == "wait" or not s.command):
        return False
    return _runnable(p, shutil.which(s.command[0]) if s.verb == "run" and s.command else None)


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Fallback) else type(exc).__name__


def _debug(on: bool, text: str) -> None:
    """``HERD_FAST_LANE_DEBUG=1``: one line on stderr saying what the lane did (the reasons
    name options and states, never a value)."""
    if on:
        sys.stderr.write(f"herd: fast lane: {text}\n")


def _runnable(p: Plan, executable: str | None) -> bool:
    """The normal path would not refuse this combination before reading the heads."""
    s = p.settings
    if s.verb == "migrate":
        return not (s.command is not None and (not s.command or s["expand_only"]))
    if s.verb == "run":
        if executable is None:
            return False
        if s["mode"] != "wait" and s["migrate_command"] and s["expand_only"]:
            return False
    return True


def _answer(p: Plan, stamp: Stamp, executable: str | None, *,
            done: str | None = None) -> NoReturn:
    """Print what the normal path prints at head, then exit 0 (``run``: exec); ``done``:
    the outcome of a replica that waited (:mod:`._lanewait`), whose events are out."""
    s = p.settings
    heads = ", ".join(stamp.heads) or "base"
    secrets = [x for x in (p.app.password, p.herd.password) if x]
    log = _Log(s["log_format"], quiet=bool(s["quiet"]) or s.verb == "check", secrets=secrets)
    if s.verb == "check":
        _out(f"current: {stamp.display} at {heads}", secrets)
        _leave(0)
    wait = s.verb == "run" and s["mode"] == "wait"
    if done is not None:
        pass
    elif wait:
        log.event("current", f"database is current at {heads}", heads=list(stamp.heads),
                  waited=0.0)
    else:
        log.event("current", f"database {stamp.url} is current at {heads}; nothing to do",
                  heads=list(stamp.heads))
    done = done or f"database already current at {heads}"
    if s.verb == "migrate":
        _out(done, secrets)
        _leave(0)
    command = s.command or []
    log.event("exec", f"{done}; starting {' '.join(command)}", command=command[0])
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):  # the normal path says why (nothing on stdout yet)
        os.execv(executable or command[0], command)
    raise Fallback("exec")


def _mask(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return USERINFO.sub(r"\1:***@", text)


def _out(line: str, secrets: Sequence[str]) -> None:
    sys.stdout.write(_mask(line, secrets) + "\n")


def _leave(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Log:
    """herd's log lines as :mod:`._logformat` writes them (INFO only)."""

    def __init__(self, log_format: str, *, quiet: bool, secrets: Sequence[str]) -> None:
        self.json = log_format == "json"
        self.quiet = quiet
        self.secrets = secrets
        self.replica = f"{socket.gethostname()}:{os.getpid()}"

    def event(self, event: str, message: str, **fields: Any) -> None:
        if self.quiet:
            return
        now = time.time()
        if self.json:
            from datetime import UTC, datetime

            data: dict[str, Any] = {
                "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                "level": "info", "replica": self.replica, "event": event, "message": message}
            data.update({k: v for k, v in fields.items() if k not in data})
            line = json.dumps(data, default=str)
        else:
            line = f"{time.strftime('%H:%M:%S', time.localtime(now))} herd[{self.replica}] " \
                   f"{message}"
        sys.stderr.write(_mask(line, self.secrets) + "\n")


# -- the stamp, written by the normal path ------------------------------------------------


def record(conn: Any, env: Any, heads: Sequence[str], *, url: Any, herd_schema: str | None,
           migrated: bool = False) -> None:
    """Write the stamp for the current :data:`REQUEST` (``herd`` command only): the
    database on herd's connection ``conn`` is at ``heads``, the script heads of ``env``
    (an :class:`~._environment.Environment` located on ``conn``). Only into an existing
    graph this user may write (``migrated``: this run may just have created it); any
    failure is ignored (the lane then keeps falling back)."""
    request = REQUEST.get()
    if request is None or switched_off(os.environ):
        return
    if request.state in ("readonly", "unknown") or (request.state == "missing"
                                                    and not migrated):
        return
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from ._database import display
    from ._graph import _upsert, graph_table

    log = logging.getLogger("alembic_herd")
    try:
        engine_url = conn.engine.url
        backend = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql",
                   "sqlite": "sqlite"}.get(engine_url.get_backend_name())
        server = (backend, engine_url.username or None, engine_url.host or None,
                  engine_url.port, engine_url.database or None)
        location = env.location
        if (server != request.server or herd_schema != request.herd_schema
                or location is None or (backend != "sqlite" and not location.schema)
                or tuple(sorted(heads)) != tuple(sorted(env.script_heads()))):
            return
        stamp = json.dumps({"table": location.table, "schema": location.schema,
                            "display": env.qualified_version_table, "heads": sorted(heads),
                            "url": display(url)})
        table = graph_table(_GRAPH_TABLE, herd_schema)
        conn.execute(_upsert(conn.dialect.name, table), [
            {"scope": SCOPE, "revision": request.fingerprint, "parents": stamp,
             "phase": None}])
        if conn.in_transaction() and conn.get_isolation_level() != "AUTOCOMMIT":
            conn.commit()
        REQUEST.set(None)  # once per run
        from ._lanewait import release

        release()  # the replicas waiting on this project's gate read the stamp now
    except (SQLAlchemyError, OSError) as exc:
        log.debug("fast lane: no stamp written (%s)", type(exc).__name__)
        try:
            if conn.in_transaction():
                conn.rollback()
        except SQLAlchemyError:
            pass
