"""Roles as platform teams hand them out (issue 13, points 1 and 2), on PostgreSQL and
MariaDB: the owner; a migrator that owns only its schema (PostgreSQL: schema ``app``, no
CREATE on ``public``; MariaDB: privileges on one database only); a runtime role that may read
the version table and the application's tables and nothing of herd's; a role without
access. docs/operators.md ("Roles and privileges") gives the same GRANT statements.

Cluster-global roles and users get a random suffix and are dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from conftest import PROJECTS, make_database, render

BIN = Path(sys.executable).parent
OWNSCHEMA = str(PROJECTS / "ownschema" / "alembic.ini")
PLAIN = str(PROJECTS / "emptycheck" / "alembic.ini")
PASSWORD = "Pw-7f3a9c"
READ_ONLY_VERBS = (["check"], ["wait", "--timeout", "20s"], ["status"])


def herd(*args: str, url: URL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "herd"), *args, "-q", "--url", render(url)], check=False,
                          capture_output=True, text=True, timeout=180,
                          env={k: v for k, v in os.environ.items() if "DATABASE_URL" not in k})


def execute(url: URL, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def tables(url: URL, schema: str | None = None) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def suffix() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    yield from make_database(backend, request, tmp_path)


def test_postgresql_roles(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with database("postgresql-server", request, tmp_path) as owner:
        migrator, runtime, nobody = (f"herd_{kind}_{suffix()}" for kind in ("mig", "rt", "no"))
        server = owner.set(database="postgres")
        execute(server, *(f"CREATE ROLE {r} LOGIN PASSWORD '{PASSWORD}'"
                          for r in (migrator, runtime, nobody)))
        try:
            # the DBA's part (docs/operators.md): schema app belongs to the migrator; public
            # grants CREATE to nobody (PostgreSQL 15's default, made explicit)
            execute(owner, "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                    f"CREATE SCHEMA app AUTHORIZATION {migrator}")
            as_migrator = owner.set(username=migrator, password=PASSWORD)
            as_runtime = owner.set(username=runtime, password=PASSWORD)
            as_nobody = owner.set(username=nobody, password=PASSWORD)

            # control: herd's tables forced into public (what herd did before) is refused
            # before anything is migrated, naming the grant
            forced = herd("migrate", "-c", OWNSCHEMA, "--herd-schema", "public",
                          url=as_migrator)
            assert forced.returncode == 14, forced.stderr
            assert f"GRANT USAGE, CREATE ON SCHEMA public TO {migrator}" in forced.stderr
            assert tables(owner, "app") == set()

            # the migrator: herd's tables go beside the version table, in app
            done = herd("migrate", "-c", OWNSCHEMA, url=as_migrator)
            assert done.returncode == 0, done.stderr
            assert {"alembic_version", "herd_history", "herd_revisions", "users"} <= tables(
                owner, "app")
            assert tables(owner, "public") == set()
            # --history-table SCHEMA.NAME is a schema and a name, not a name with a dot
            again = herd("status", "-c", OWNSCHEMA, "--history-table", "app.herd_history",
                         url=as_migrator)
            assert again.returncode == 0, again.stderr
            assert "s1" in again.stdout

            # the runtime role: the version table and the app's tables, nothing of herd's
            execute(owner, f"GRANT USAGE ON SCHEMA app TO {runtime}",
                    f"GRANT SELECT ON app.alembic_version, app.users, app.settings "
                    f"TO {runtime}")
            before = tables(owner, "app") | tables(owner, "public")
            for verb in READ_ONLY_VERBS:
                ran = herd(*verb, "-c", OWNSCHEMA, url=as_runtime)
                assert ran.returncode == 0, (verb, ran.stdout, ran.stderr)
            assert tables(owner, "app") | tables(owner, "public") == before  # created nothing
            # control: herd's attempt log really is out of its reach ('herd history' needs it)
            denied = herd("history", "-c", OWNSCHEMA, url=as_runtime)
            assert denied.returncode == 14, denied.stderr
            assert f"GRANT SELECT ON app.herd_history TO {runtime}" in denied.stderr

            # a role without access: one line naming the grant, exit 14
            refused = herd("check", "-c", OWNSCHEMA, url=as_nobody)
            assert refused.returncode == 14, refused.stderr
            assert (f"GRANT USAGE ON SCHEMA app TO {nobody}; GRANT SELECT ON "
                    f"app.alembic_version TO {nobody}") in refused.stderr
            assert refused.stderr.count("\n") == 1 and PASSWORD not in refused.stderr

            # the owner: everything
            for verb in READ_ONLY_VERBS:
                assert herd(*verb, "-c", OWNSCHEMA, url=owner).returncode == 0, verb
        finally:
            execute(owner, *(f"DROP OWNED BY {r}" for r in (migrator, runtime, nobody)))
            execute(server, f"DROP DATABASE {owner.database} WITH (FORCE)",
                    *(f"DROP ROLE {r}" for r in (migrator, runtime, nobody)))


def test_mariadb_users(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with database("mysql", request, tmp_path) as owner, \
            database("mysql", request, tmp_path) as other:
        db, elsewhere = str(owner.database), str(other.database)
        migrator, runtime, nobody = (f"herd_{kind}_{suffix()}" for kind in ("mig", "rt", "no"))
        execute(owner, *(f"CREATE USER '{u}'@'%' IDENTIFIED BY '{PASSWORD}'"
                         for u in (migrator, runtime, nobody)))
        try:
            execute(owner, f"GRANT ALL PRIVILEGES ON {db}.* TO '{migrator}'@'%'")
            as_migrator = owner.set(username=migrator, password=PASSWORD)
            as_runtime = owner.set(username=runtime, password=PASSWORD)
            as_nobody = owner.set(username=nobody, password=PASSWORD)

            # control: herd's tables in a database the migrator has no privilege on
            forced = herd("migrate", "-c", PLAIN, "--herd-schema", elsewhere, url=as_migrator)
            assert forced.returncode == 14, forced.stderr
            assert f"ON {elsewhere}.* TO '{migrator}'@'%'" in forced.stderr
            assert tables(owner) == set() and tables(other) == set()

            done = herd("migrate", "-c", PLAIN, url=as_migrator)
            assert done.returncode == 0, done.stderr
            assert {"alembic_version", "herd_history", "herd_revisions", "accounts"} <= tables(
                owner)

            execute(owner, f"GRANT SELECT ON {db}.alembic_version TO '{runtime}'@'%'",
                    f"GRANT SELECT ON {db}.accounts TO '{runtime}'@'%'")
            before = tables(owner)
            for verb in READ_ONLY_VERBS:
                ran = herd(*verb, "-c", PLAIN, url=as_runtime)
                assert ran.returncode == 0, (verb, ran.stdout, ran.stderr)
            assert tables(owner) == before
            denied = herd("history", "-c", PLAIN, url=as_runtime)
            assert denied.returncode == 14, denied.stderr
            assert f"GRANT SELECT ON {db}.herd_history TO '{runtime}'@'%'" in denied.stderr

            refused = herd("check", "-c", PLAIN, url=as_nobody)
            assert refused.returncode == 14, refused.stderr
            assert f"GRANT SELECT ON {db}.alembic_version TO '{nobody}'@'%'" in refused.stderr
            assert refused.stderr.count("\n") == 1
            assert PASSWORD not in refused.stderr

            for verb in READ_ONLY_VERBS:
                assert herd(*verb, "-c", PLAIN, url=owner).returncode == 0, verb
        finally:
            execute(owner, *(f"DROP USER IF EXISTS '{u}'@'%'"
                             for u in (migrator, runtime, nobody)))


def test_schema_names_on_sqlite(tmp_path: Path) -> None:
    """SQLite: herd's connection sees no schema but ``main``; another is refused (exit 3)
    before anything is created, ``main`` is the database file itself."""
    url = sa.make_url(f"sqlite:///{tmp_path / 'app.db'}")
    refused = herd("migrate", "-c", PLAIN, "--herd-schema", "audit", url=url)
    assert refused.returncode == 3, refused.stderr
    assert "SQLite has no schemas" in refused.stderr
    assert not (tmp_path / "app.db").exists() or tables(url) == set()
    done = herd("migrate", "-c", PLAIN, "--history-table", "main.herd_log", url=url)
    assert done.returncode == 0, done.stderr
    assert {"herd_log", "herd_revisions", "accounts"} <= tables(url)


def test_a_qualified_name_is_parsed() -> None:
    from alembic_herd._history import history_table
    from alembic_herd._tables import split_name

    assert split_name("app.herd_history", option="x") == ("app", "herd_history")
    assert split_name("herd_history", option="x") == (None, "herd_history")
    assert history_table("app.x").fullname == "app.x" and history_table("app.x").name == "x"
    with pytest.raises(Exception, match=r"expected NAME or SCHEMA\.NAME"):
        split_name("a.b.c", option="--history-table")
