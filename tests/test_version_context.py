"""herd watches the version table env.py really uses (issue 13, point 4).

The version table's name, its schema and the search_path come from the migration context
env.py configures (``Environment.locate``: env.py run online in read mode when its offline
mode leaves the schema open), for every verb. An env.py that migrates several version
tables in one run (tenants) is refused in every verb before anything is migrated.

Each test has a control: with the online probe switched off (``_probe_online`` raising, as
for an env.py that cannot run here) herd reads the bare ``alembic_version`` as before and
gets the answer wrong; with the tenants refusal switched off (``refuse_several`` a no-op)
herd reports a database current while a tenant is behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd import ConfigurationError
from alembic_herd import _environment as environment
from conftest import PROJECTS, render
from herd_harness import release

SEARCHPATH = str(PROJECTS / "searchpath" / "alembic.ini")
VERSIONSCHEMA = str(PROJECTS / "versionschema" / "alembic.ini")
TENANTS = str(PROJECTS / "tenants" / "alembic.ini")
REVISIONS = ("v1", "v2")


def execute(url: URL, *sql: str) -> list[tuple[Any, ...]]:
    """Run statements on a throwaway autocommit engine; the last one's rows."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result: list[tuple[Any, ...]] = []
            for statement in sql:
                cursor = conn.execute(sa.text(statement))
                result = [tuple(r) for r in cursor] if cursor.returns_rows else []
            return result
    finally:
        engine.dispose()


def tables(url: URL) -> set[str]:
    """Every table in the database, schema-qualified on PostgreSQL."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        if url.get_backend_name() != "postgresql":
            return set(inspector.get_table_names())
        return {f"{s}.{t}" for s in inspector.get_schema_names()
                if s not in ("information_schema", "pg_catalog", "pg_toast")
                for t in inspector.get_table_names(schema=s)}
    finally:
        engine.dispose()


def herd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``herd ARGS...`` as a real process, without the caller's HERD_* settings."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
           and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    return subprocess.run([sys.executable, "-m", "alembic_herd.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def no_online_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: herd as it was, learning the version table from env.py's offline mode only
    (as for an env.py that cannot run online where herd runs)."""
    def refuse(env: Any) -> list[Any]:
        raise NotImplementedError("control: online probe switched off")
    monkeypatch.setattr(environment, "_probe_online", refuse)


# -- SET search_path in env.py -------------------------------------------------------------

def test_search_path_env_every_verb(pg: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """env.py sets search_path to 'app' and passes no schema: herd migrates and then finds
    app.alembic_version in migrate, wait, status, check and run. Control first, on the same
    database: without the online probe the migration is refused before anything is applied
    (it used to apply and then exit 8 watching public.alembic_version), and after the
    migration herd without the probe reports the database behind."""
    url = render(pg)
    execute(pg, "CREATE SCHEMA app")
    with monkeypatch.context() as control:
        no_online_probe(control)
        with pytest.raises(ConfigurationError, match=r"'app\.alembic_version"):
            alembic_herd.upgrade(SEARCHPATH, url=url, lock_timeout=30)
    assert not {t for t in tables(pg) if not t.startswith("public.herd_")}

    outcome = alembic_herd.upgrade(SEARCHPATH, url=url, lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions == REVISIONS
    assert execute(pg, "SELECT version_num FROM app.alembic_version") == [("v2",)]
    assert execute(pg, "SELECT count(*) FROM app.things") == [(1,)]
    assert "public.alembic_version" not in tables(pg)

    status = alembic_herd.status(SEARCHPATH, url=url)
    assert status.version_table == "app.alembic_version"
    assert status.is_current and status.current_heads == ("v2",)
    assert alembic_herd.upgrade(SEARCHPATH, url=url).action == "current"
    assert alembic_herd.wait_until_current(SEARCHPATH, url=url, timeout=10).action == "current"
    check = herd_cli("check", "-c", SEARCHPATH, "--url", url)
    assert check.returncode == 0, (check.stdout, check.stderr)
    run = herd_cli("run", "-c", SEARCHPATH, "--url", url, "--mode", "wait", "--",
                   sys.executable, "-c", "print('app started')")
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "app started" in run.stdout

    with monkeypatch.context() as control:  # the old reading: public.alembic_version
        no_online_probe(control)
        old = alembic_herd.status(SEARCHPATH, url=url)
        assert old.version_table == "alembic_version"
        assert not old.is_current and old.pending == REVISIONS


@pytest.mark.herd
def test_search_path_env_herd_of_8(pg: URL) -> None:
    """8 replicas of the search_path env.py released at once: all exit 0, one migrates, the
    others find app.alembic_version current (each ran env.py in read mode first)."""
    execute(pg, "CREATE SCHEMA app")
    results = release(8, ["herd", SEARCHPATH, render(pg)], timeout=240)
    failures = [(r.returncode, r.report, r.stderr[-1500:]) for r in results if r.returncode]
    assert not failures, failures[:2]
    actions = sorted(r.report["action"] for r in results)
    assert actions.count("migrated") == 1, actions
    assert all(r.report["heads"] == ["v2"] for r in results)
    assert execute(pg, "SELECT count(*) FROM app.things") == [(1,)]
    assert "public.alembic_version" not in tables(pg)


# -- version_table_schema given to configure() online only ---------------------------------

@contextlib.contextmanager
def other_schema(db: URL) -> Iterator[str]:
    """A schema in ``db`` (PostgreSQL), or another database on the server (MySQL/MariaDB:
    cluster-global, so uniquely named and dropped afterwards)."""
    name = f"herd_vs_{uuid.uuid4().hex[:10]}"
    execute(db, f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        if db.get_backend_name() != "postgresql":
            execute(db, f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_version_table_schema_given_online_only(db: URL,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """env.py passes version_table_schema (another schema; on MariaDB another database) only
    online: herd migrates, then reads that table in status, check and wait. Control: without
    the online probe herd reads the bare alembic_version and reports the database behind."""
    url = render(db)
    with other_schema(db) as schema:
        x = {"schema": schema}
        outcome = alembic_herd.upgrade(VERSIONSCHEMA, url=url, x_arguments=x, lock_timeout=30)
        assert outcome.action == "migrated" and outcome.revisions == REVISIONS
        assert execute(db, f"SELECT version_num FROM {schema}.alembic_version") == [("v2",)]
        assert not {"alembic_version", "public.alembic_version"} & tables(db)
        status = alembic_herd.status(VERSIONSCHEMA, url=url, x_arguments=x)
        assert status.version_table == f"{schema}.alembic_version"
        assert status.is_current
        assert alembic_herd.wait_until_current(VERSIONSCHEMA, url=url, x_arguments=x,
                                               timeout=10).action == "current"
        check = herd_cli("check", "-c", VERSIONSCHEMA, "--url", url, "-x", f"schema={schema}")
        assert check.returncode == 0, (check.stdout, check.stderr)
        with monkeypatch.context() as control:
            no_online_probe(control)
            old = alembic_herd.status(VERSIONSCHEMA, url=url, x_arguments=x)
            assert old.version_table == "alembic_version"
            assert not old.is_current


# -- tenants: several version tables in one run --------------------------------------------

TENANT_CASES = [("postgresql", "search_path"), ("postgresql", "schema"), ("mysql", "table"),
                ("sqlite", "table")]


def tenant_tables(db: URL) -> set[str]:
    """The tenants' tables and version tables that exist."""
    return {t for t in tables(db) if "herd_" not in t}


@pytest.mark.parametrize(("backend", "by"), TENANT_CASES,
                         ids=[f"{b}-{by}" for b, by in TENANT_CASES])
def test_tenants_are_refused_before_anything_is_migrated(
        db: URL, by: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """env.py migrates tenants t1 and t2 in one run: herd migrate refuses (exit 3, one line)
    before either is migrated. With t1 at head and t2 behind (plain Alembic, one tenant),
    status, wait and check refuse too: never current. Control: with the refusal switched
    off herd reports that database current."""
    url = render(db)
    if db.get_backend_name() == "postgresql":
        execute(db, "CREATE SCHEMA t1", "CREATE SCHEMA t2")
    x = {"by": by}
    with pytest.raises(ConfigurationError, match="migrates 2 version tables in one run"):
        alembic_herd.upgrade(TENANTS, url=url, x_arguments=x, lock_timeout=30)
    assert tenant_tables(db) == set()

    cfg = Config(TENANTS)  # t1 alone, with plain Alembic
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.cmd_opts = argparse.Namespace(x=[f"by={by}", "tenants=t1"])
    command.upgrade(cfg, "head")
    assert tenant_tables(db)

    for verb in (alembic_herd.status, alembic_herd.wait_until_current):
        with pytest.raises(ConfigurationError, match="migrates 2 version tables"):
            verb(TENANTS, url=url, x_arguments=x)
    check = herd_cli("check", "-c", TENANTS, "--url", url, "-x", f"by={by}")
    assert check.returncode == 3, (check.stdout, check.stderr)
    out = [line for line in (check.stdout + check.stderr).splitlines() if line.strip()]
    assert len(out) == 1 and out[0].startswith("herd: error: env.py migrates 2 version"), out

    with monkeypatch.context() as control:  # without the refusal: one tenant's table read
        control.setattr(environment, "refuse_several", lambda found: None)
        assert alembic_herd.status(TENANTS, url=url, x_arguments=x).is_current
