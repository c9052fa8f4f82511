"""Connections herd opens itself: URL handling, engines, transient-error classification.

herd never uses the application's engine for coordination. It opens its own connections
(``NullPool``, autocommit) so that a waiter holds no open transaction in the migrated
database, and a leader's lock lives on a connection that Alembic never touches.
"""

from __future__ import annotations

import math
import os
import re
import socket
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from . import _compat
from ._defaults import CONNECT_TIMEOUT, KEEPALIVES
from .errors import ConfigurationError, DatabaseUnavailableError

HOST = socket.gethostname()
# (the pid is read with os.getpid() where it is used, never kept: a process forked after
# importing herd - gunicorn --preload, Celery's prefork pool - is itself, not its parent)


_IDLE, _INTERVAL, _COUNT = KEEPALIVES
SERVER_KEEPALIVES = (
    "(SELECT count(set_config(s.name, LEAST(NULLIF(s.setting::int, 0), v.value)::text, false))"
    f" FROM pg_settings s JOIN (VALUES ('tcp_keepalives_idle', {_IDLE}),"
    f" ('tcp_keepalives_interval', {_INTERVAL}), ('tcp_keepalives_count', {_COUNT}),"
    f" ('tcp_user_timeout', {(_IDLE + _INTERVAL * _COUNT) * 1000}))"
    " AS v(name, value) ON v.name = s.name)"
)
"""A scalar SQL expression that sets the *server's* TCP timeouts for the session running it
(PostgreSQL): keepalives for a silent peer, and ``tcp_user_timeout`` (PostgreSQL 12+; left
out where the server lacks it) for data the peer never acknowledges - a connection cut
while a reply was in flight is in retransmission, where keepalives do not apply. Only ever
lowers a setting the session already has."""

# Async drivers an env.py may use, and the sync driver herd uses for the same database.
_SYNC_DRIVERS = {
    "asyncpg": _compat.PG_DRIVER,
    "psycopg_async": _compat.PG_DRIVER,
    "aiomysql": "pymysql",
    "asyncmy": "pymysql",
    "aiosqlite": "pysqlite",
}


def parse_url(url: str | URL) -> URL:
    """Parse ``url``, refusing malformed ones with a message that never shows the password.

    A password with an un-encoded ``@`` (``app:p@ss@db/app``) is read up to the *last*
    ``@`` before the host, where SQLAlchemy would cut it at the first and take the rest
    for the host. Every password parsed here is remembered for :func:`mask_text`."""
    if isinstance(url, URL):
        remember_secrets(url)
        return url
    remember_secrets(url)
    try:
        parsed = make_url(encode_userinfo(url))
        if parsed.drivername.startswith("postgres+") or parsed.drivername == "postgres":
            # Heroku-style DATABASE_URL; SQLAlchemy only knows "postgresql"
            parsed = parsed.set(drivername="postgresql" + parsed.drivername[len("postgres"):])
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"database URL {mask_text(url)!r} is malformed; expected "
            "dialect+driver://user@host:port/database (':password' after the user), e.g. "
            "postgresql+psycopg://app@db:5432/app"
        ) from exc
    remember_secrets(parsed)
    return parsed


# -- secrets ------------------------------------------------------------------------------
# One function masks every text herd prints (mask_text); display() renders a URL through it.

_SCHEME = re.compile(r"[A-Za-z][\w+.-]*://")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)(?P<info>[^\s'\"]*)@")
"""``scheme://userinfo@`` in free text; the greedy ``info`` ends at the token's last ``@``."""
_BARE_USERINFO = re.compile(r"""(^|[\s'"=(])(/{0,2}[^\s'"=(:/@]*:)(?!//)[^\s'"]*@""")
"""``user:password@`` at the start of a token without a scheme (``app:pw@db/app``)."""
_SECRETS: set[str] = set()


def _split_userinfo(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme://, user, password, rest after the last '@')`` of a URL with a password."""
    scheme = _SCHEME.match(url.strip())
    if scheme is None:
        return None
    rest = url.strip()[scheme.end():]
    at = rest.rfind("@")
    user, colon, password = rest[:max(at, 0)].partition(":")
    if at < 0 or not colon:
        return None
    return scheme.group(0), user, password, rest[at + 1:]


def encode_userinfo(url: str) -> str:
    """``url`` with user and password percent-encoded when they contain an ``@`` (which
    SQLAlchemy's parser would take for the end of the password)."""
    parts = _split_userinfo(url)
    if parts is None or "@" not in parts[1] + parts[2]:
        return url
    scheme, user, password, rest = parts
    return f"{scheme}{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def remember_secrets(url: URL | str | None) -> None:
    """Note the password of ``url`` (as written, decoded and encoded) for :func:`mask_text`."""
    if isinstance(url, URL):
        password = url.password
    else:
        parts = _split_userinfo(url) if url else None
        password = parts[2] if parts else None
    if not password:
        return
    password = str(password)
    for form in (password, unquote(password), quote(password, safe=""), quote_plus(password),
                 re.sub(r"[:@/]", lambda m: f"%{ord(m.group(0)):X}", password)):
        _SECRETS.add(form)


def mask_text(text: str, *urls: URL | str | None) -> str:
    """``text`` without secrets: every password herd has parsed (and those of ``urls``), and
    whatever sits between ``://`` and the last ``@`` of a URL-like token (``user:***@``), so
    that a password with ``@`` or ``:`` in it leaks no fragment either. Every line herd
    prints passes through here."""
    for url in urls:
        remember_secrets(url)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        # whole tokens only: a password like 'postgres' must not garble 'postgresql'
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    text = _URL_USERINFO.sub(_hide_userinfo, text)
    return _BARE_USERINFO.sub(r"\1\2***@", text)


def _hide_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["info"].partition(":")
    if not colon:  # a user name alone
        return match.group(0)
    return f"{match['scheme']}{user}:***@"


def display(url: URL) -> str:
    """The URL with its password masked, safe for any log line or message."""
    return mask_text(url.render_as_string(hide_password=False), url)


def sync_url(url: URL) -> URL:
    """The same database, reached through a synchronous driver herd can drive."""
    dialect, _, driver = url.drivername.partition("+")
    if driver in _SYNC_DRIVERS:
        sync = _SYNC_DRIVERS[driver]
        if sync == "psycopg" and not _importable("psycopg"):
            sync = "psycopg2"
        return url.set(drivername=f"{dialect}+{sync}")
    if dialect == "postgresql" and driver == "psycopg" and not _compat.SQLALCHEMY_2:
        return url.set(drivername="postgresql+psycopg2")  # no psycopg 3 dialect on 1.4
    if dialect == "postgresql" and not driver and not _importable("psycopg2"):
        return url.set(drivername="postgresql+psycopg")
    if dialect in ("mysql", "mariadb") and not driver and not _importable("MySQLdb"):
        return url.set(drivername=f"{dialect}+pymysql")
    return url


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def create_engine(url: URL, *, application_name: str | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT,
                  statement_timeout: float | None = None,
                  pool: dict[str, Any] | None = None) -> Engine:
    """Every engine herd makes for its own connections: autocommit, a driver connect timeout
    of ``connect_timeout`` seconds at most (libpq counts whole seconds, at least 2), client
    keepalives on PostgreSQL, and no pool unless ``pool`` gives one's settings (the
    readiness probe keeps one connection). ``statement_timeout`` bounds each statement."""
    url = sync_url(url)
    per_try = min(CONNECT_TIMEOUT, connect_timeout)
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(2, math.ceil(per_try))
        if statement_timeout:
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
        connect_args["application_name"] = (application_name or f"herd {HOST} {os.getpid()}")[:63]
        # Client-side keepalives (libpq): herd notices a server that vanished. They do not
        # touch the server's socket: the lock session, when it takes the lock, and the
        # leader, on env.py's migration session, set the server's own (SERVER_KEEPALIVES),
        # so the *server* drops a leader cut off from the network, frees its lock and
        # rolls its transaction back (locks/postgresql.py, _leader.py).
        idle, interval, count = KEEPALIVES
        connect_args.update(keepalives=1, keepalives_idle=idle, keepalives_interval=interval,
                            keepalives_count=count)
        if url.get_driver_name() == "psycopg":
            # psycopg 3 prepares a statement run 5 times; a waiter polls the same few, and
            # through PgBouncer in transaction mode the next run lands on another server
            # session ("prepared statement _pg3_0 does not exist / already exists")
            connect_args["prepare_threshold"] = None
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(per_try))
        if statement_timeout:
            connect_args["read_timeout"] = max(1, math.ceil(statement_timeout))
    elif backend == "sqlite":
        connect_args["timeout"] = statement_timeout or 30
    if pool is None or backend == "sqlite":  # a file: opening it is as cheap as pooling it
        pool = {"poolclass": NullPool}
    try:
        return _compat.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args,
                                **pool)
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"database URL {display(url)!r}: SQLAlchemy has no dialect {url.drivername!r}; "
            "use postgresql, mysql, mariadb or sqlite (with a driver installed)"
        ) from exc
    except ModuleNotFoundError as exc:
        extra = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}.get(backend)
        how = f"pip install 'alembic-herd[{extra}]'" if extra else f"pip install {exc.name}"
        raise ConfigurationError(
            f"database URL {display(url)!r} needs the Python driver {exc.name!r}; install it "
            f"({how})"
        ) from exc


# SQLSTATEs (PostgreSQL) and error numbers (MySQL/MariaDB) that clear up on their own.
_PG_TRANSIENT_PREFIXES = ("08", "53", "57P")
_PG_FATAL = {"28P01", "28000", "3D000", "42501"}
_MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_MYSQL_FATAL = {1044, 1045, 1049, 1698}


def error_code(exc: BaseException) -> str | int | None:
    """The server's code for the driver error behind ``exc`` (a SQLAlchemy ``DBAPIError``):
    PostgreSQL's SQLSTATE (a ``str``, psycopg 3 or psycopg2), MySQL/MariaDB's error number
    (an ``int``), or ``None`` (SQLite, or not a driver error)."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # first: PyMySQL 1.2+ also sets a sqlstate (HY000)
        return args[0]
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return str(sqlstate)
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a connection problem that may clear up by itself."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = error_code(exc)
        if isinstance(code, str):
            return code not in _PG_FATAL and code.startswith(_PG_TRANSIENT_PREFIXES)
        if code is not None:
            return code in _MYSQL_TRANSIENT
        text = str(exc.orig).lower()
        fatal = ("password", "does not exist", "denied", "unknown database",
                 "unable to open database")  # the last: SQLite, a path that cannot exist
        if any(word in text for word in fatal):
            return False
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    return isinstance(exc, ConnectionError | TimeoutError)


def driver_message(exc: BaseException, url: URL | None = None) -> str:
    """The first meaningful line of a driver error, password removed."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(orig).__name__
    # psycopg puts 'connection to server ... failed:' first and the reason after it.
    if first.endswith("failed:") and len(lines) > 1:
        first = f"{first} {lines[1]}"
    return mask_text(first, url)


def unavailable(exc: BaseException, url: URL, *,
                tried: float | None = None) -> DatabaseUnavailableError:
    """Translate a connection failure into one clear line (``tried``: seconds spent
    retrying, when that is why herd gave up)."""
    reason = driver_message(exc, url)
    lowered = reason.lower()
    if "password" in lowered or "access denied" in lowered or "authentication" in lowered:
        hint = "check the user and password (HERD_DATABASE_URL / --url)"
    elif "does not exist" in lowered or "unknown database" in lowered:
        hint = "create the database or fix its name in the URL"
    elif url.get_backend_name() == "sqlite":
        hint = "check that the file's folder exists and is writable"
    else:
        hint = "check that the server is running and reachable from here"
    after = f" after trying for {tried:.1f}s" if tried is not None else ""
    return DatabaseUnavailableError(
        f"database {display(url)!r} unavailable{after}: {reason}; {hint}")
