"""Servers and databases for the fault suite, each reached with a password.

Every scenario connects as a role of its own whose password (:func:`secret`) is in every
URL the replicas get, so the suite can check that no output ever shows it. On the suite's
own PostgreSQL (:func:`infra.fault_server`) the password is really checked (SCRAM); on the
machine's PostgreSQL (``HERD_TEST_POSTGRES_URL``) and MariaDB (``HERD_TEST_MYSQL_URL``)
the role is created there and its password carried the same way.

Markers: every test here is ``faults``; the many-trial variants are also ``slow`` and run
only with ``make faults`` (pyproject's addopts deselect ``slow``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from alembic_herd._embedded import EmbeddedPostgres
from conftest import unavailable

from .infra import fault_server
from .trials import prepare

ROLE = f"herd_fault_{uuid.uuid4().hex[:8]}"
"""The suite's role: a name of its own per session (servers are shared: another session's
role, and its password, are left alone), dropped at the end."""
SECRET = f"Fault-{uuid.uuid4().hex[:12]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def secret() -> str:
    """The password of the suite's database role (no output may ever contain it)."""
    return SECRET


def _admin(url: URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextlib.contextmanager
def _pg_database(admin: URL, role_url: Callable[[str], URL]) -> Iterator[URL]:
    name = f"herd_fault_{uuid.uuid4().hex[:10]}"
    eng = _admin(admin)
    with eng.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} OWNER {ROLE}"))
    url = role_url(name)
    prepare(url)
    try:
        yield url
    finally:
        with eng.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        eng.dispose()


class PostgresFixture:
    """A PostgreSQL server with the suite's role: :meth:`database` makes a fresh database
    (with ``fault_marks``) owned by it and yields the role's URL."""

    def __init__(self, admin: URL, host: str, port: int, server: EmbeddedPostgres | None) -> None:
        self.admin = admin
        self.host, self.port = host, port
        self.server = server
        eng = _admin(admin)
        with eng.connect() as conn:
            exists = conn.scalar(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r"),
                                 {"r": ROLE})
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sa.text(f"{verb} ROLE {ROLE} LOGIN PASSWORD '{SECRET}'"))
        eng.dispose()

    def url(self, database: str, host: str | None = None, port: int | None = None) -> URL:
        return URL.create("postgresql+psycopg", username=ROLE, password=SECRET,
                          host=host or self.host, port=port or self.port, database=database)

    def admin_of(self, url: URL) -> URL:
        """The suite's superuser connection to ``url``'s database."""
        return self.admin.set(database=url.database)

    def close(self) -> None:
        """Drop the suite's role (its databases are gone by now)."""
        eng = _admin(self.admin)
        with eng.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {ROLE}"))
        eng.dispose()

    @contextlib.contextmanager
    def database(self) -> Iterator[URL]:
        with _pg_database(self.admin, self.url) as url:
            yield url


@pytest.fixture(scope="session")
def fault_pg() -> Iterator[PostgresFixture]:
    """The suite's own PostgreSQL (SCRAM passwords over TCP), shared by the scenarios that
    do not restart or reconfigure it."""
    with fault_server(settings={"max_connections": "200"}) as server:
        yield PostgresFixture(server.admin, "127.0.0.1", server.port, server)


@pytest.fixture(scope="session")
def real_pg(fault_pg: PostgresFixture) -> Iterator[PostgresFixture]:
    """The machine's PostgreSQL at HERD_TEST_POSTGRES_URL (CI sets it) when set, else the
    suite's own server (the proxy and PgBouncer scenarios sit in front of a TCP port)."""
    raw = os.environ.get("HERD_TEST_POSTGRES_URL")
    if not raw:
        if "postgresql-server" in os.environ.get("HERD_REQUIRE_BACKENDS", ""):
            unavailable("postgresql-server", "HERD_TEST_POSTGRES_URL is not set")
        yield fault_pg
        return
    admin = make_url(raw)
    try:
        with _admin(admin).connect():
            pass
    except sa.exc.OperationalError as exc:
        unavailable("postgresql-server", f"cannot connect: {exc}")
    fixture = PostgresFixture(admin, admin.host or "127.0.0.1", admin.port or 5432, None)
    try:
        yield fixture
    finally:
        fixture.close()


class MysqlFixture:
    def __init__(self, admin: URL) -> None:
        self.admin = admin
        eng = _admin(admin)
        with eng.connect() as conn:
            conn.execute(sa.text(f"CREATE USER IF NOT EXISTS '{ROLE}'@'%' "
                                 f"IDENTIFIED BY '{SECRET}'"))
            conn.execute(sa.text(f"CREATE USER IF NOT EXISTS '{ROLE}'@'localhost' "
                                 f"IDENTIFIED BY '{SECRET}'"))
            for host in ("%", "localhost"):
                conn.execute(sa.text(f"ALTER USER '{ROLE}'@'{host}' IDENTIFIED BY '{SECRET}'"))
                conn.execute(sa.text(f"GRANT ALL ON `herd\\_fault\\_%`.* TO '{ROLE}'@'{host}'"))
        eng.dispose()

    @contextlib.contextmanager
    def database(self) -> Iterator[URL]:
        name = f"herd_fault_{uuid.uuid4().hex[:10]}"
        eng = _admin(self.admin)
        with eng.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = URL.create("mysql+pymysql", username=ROLE, password=SECRET,
                         host=self.admin.host or "127.0.0.1", port=self.admin.port or 3306,
                         database=name)
        prepare(url)
        try:
            yield url
        finally:
            with eng.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            eng.dispose()

    def admin_of(self, url: URL) -> URL:
        return self.admin.set(database=url.database)

    def close(self) -> None:
        eng = _admin(self.admin)
        with eng.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(sa.text(f"DROP USER IF EXISTS '{ROLE}'@'{host}'"))
        eng.dispose()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MysqlFixture]:
    raw = os.environ.get("HERD_TEST_MYSQL_URL")
    if not raw:
        unavailable("mysql", "HERD_TEST_MYSQL_URL is not set")
    admin = make_url(str(raw))
    try:
        with _admin(admin).connect():
            pass
    except sa.exc.OperationalError as exc:
        unavailable("mysql", f"cannot connect: {exc}")
    fixture = MysqlFixture(admin)
    try:
        yield fixture
    finally:
        fixture.close()

