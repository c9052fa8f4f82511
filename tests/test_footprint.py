"""No footprint the application can see (issue 13, point 3).

The project (tests/projects/emptycheck) asks "is this database empty, ignoring Alembic's
version table?" twice: its own upgrade command (upgrade.py: empty -> create the models and
stamp head, else run the revisions after the baseline) and its baseline revision (empty ->
create the accounts table). herd's tables must not exist when either asks: they appear only
once the first revision has committed (in-process) or the wrapped command has exited.
The controls run the same with ``HERD_TEST_EAGER_TABLES=1`` (herd's tables created before the
migration, as herd did before) and show the project failing.

And after herd ran, ``alembic check`` in the project reports nothing about herd's tables
(the Alembic plugin ``alembic_herd_autogen``, loaded through its entry point, with no edit
to env.py); the control turns the plugin off in env.py (``-x plugins=none``) and Alembic
offers to drop them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from alembic_herd._graph import graph_table
from alembic_herd._history import history_table
from alembic_herd.locks.lease import lease_table
from alembic_herd_autogen import HERDS_COLUMNS, include_name, is_herds
from conftest import PROJECTS, make_database, render
from conftest import rows as scalar_rows
from herd_harness import release

PROJECT = PROJECTS / "emptycheck"
CONFIG = str(PROJECT / "alembic.ini")
UPGRADE = str(PROJECT / "upgrade.py")
BIN = Path(sys.executable).parent
EAGER = {"HERD_TEST_EAGER_TABLES": "1"}


@pytest.fixture(params=["postgresql-server", "mysql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    yield from make_database(request.param, request, tmp_path)


@pytest.fixture(params=["postgresql-server", "mysql"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    yield from make_database(request.param, request, tmp_path)


def herd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "herd"), *args], check=False, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=180)



def tables(url: URL) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def alembic_check(url: URL, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "alembic"), *extra, "check"], cwd=PROJECT,
                          check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DATABASE_URL": render(url)})


def test_the_plugin_knows_herds_tables() -> None:
    """The plugin's column signatures are those of herd's table definitions."""
    assert {frozenset(t().c.keys()) for t in (history_table, graph_table, lease_table)} == set(
        HERDS_COLUMNS)
    assert not is_herds(["id", "scope", "revision"])


def test_first_revision_sees_an_empty_database(url: URL) -> None:
    """In-process: the baseline revision finds no table of herd's, the migration passes, and
    the attempt log still records both revisions; then `alembic check` is clean."""
    done = herd("migrate", "-q", "-c", CONFIG, "--url", render(url))
    assert done.returncode == 0, done.stderr
    assert scalar_rows(url, "SELECT tables FROM seen") == [("",)]
    assert scalar_rows(url, "SELECT revision, status FROM herd_history ORDER BY id") == [
        ("e1", "applied"), ("e2", "applied")]
    assert {"herd_history", "herd_revisions"} <= tables(url)

    check = alembic_check(url)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    control = alembic_check(url, "-x", "plugins=none")  # the plugin off: herd's tables show
    assert control.returncode != 0
    assert "remove_table" in control.stdout + control.stderr
    assert "herd_history" in control.stdout + control.stderr
    assert autogenerate(url, include_name=None) != []  # the plugin off, nothing else
    assert autogenerate(url, include_name=include_name) == []  # Alembic < 1.18's one line


def autogenerate(url: URL, *, include_name: object) -> list[object]:
    """The project's autogenerate diff with herd's plugin off, with or without the env.py
    line documented for Alembic older than 1.18."""
    sys.path.insert(0, str(PROJECT))
    try:
        import models  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(PROJECT))
    opts: dict[str, object] = {"autogenerate_plugins": [
        "alembic.autogenerate.*", "~alembic.autogenerate.alembic_herd"]}
    if include_name is not None:
        opts["include_name"] = include_name
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=opts)
            return list(compare_metadata(context, models.metadata))
    finally:
        engine.dispose()


def test_control_tables_created_up_front_break_the_baseline(url: URL) -> None:
    """The control: with herd's tables created before the migration (the old behaviour) the
    baseline sees them, skips its table, and the next revision fails."""
    done = herd("migrate", "-q", "-c", CONFIG, "--url", render(url), env=EAGER)
    # exit 8 on the servers; on SQLite herd misreads "no such table" as a lost connection
    # (exit 4, a known defect of _database.is_transient, not of this feature)
    assert done.returncode == (4 if url.get_backend_name() == "sqlite" else 8), done.stderr
    assert "e2" in done.stderr and "accounts" in done.stderr
    assert "accounts" not in tables(url)


def herd_of_eight(url: URL, env: dict[str, str]) -> list[int]:
    results = release(8, ["command", CONFIG, "-", "--", sys.executable, UPGRADE], timeout=240,
                      env={"HERD_REPLICA_URL": render(url), "DATABASE_URL": render(url),
                           **env})
    return sorted(r.returncode for r in results)


def test_wrapped_command_with_an_empty_check_under_a_herd_of_8(
        server_url: URL, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """8 replicas released at once run the project's own upgrade command under herd: all
    succeed, the command took the new-database path (no 'seen' row: create_all made the
    tables, no revision ran), the database is at head with accounts.email, and herd's
    attempt log (written after the command exited) has the command's row and e1, e2
    applied. The control (tables up
    front) fails; without herd, the command alone passes."""
    codes = herd_of_eight(server_url, {})
    assert codes == [0] * 8
    assert scalar_rows(server_url, "SELECT version_num FROM alembic_version") == [("e2",)]
    assert scalar_rows(server_url, "SELECT count(*) FROM seen") == [(0,)]
    assert "email" in {c["name"] for c in sa.inspect(sa.create_engine(server_url)).get_columns(
        "accounts")}
    assert sorted(scalar_rows(server_url, "SELECT revision, status FROM herd_history")) == [
        ("command", "applied"), ("e1", "applied"), ("e2", "applied")]  # the command's row
    check = alembic_check(server_url)
    assert check.returncode == 0, check.stdout + check.stderr

    backend = "mysql" if server_url.get_backend_name() == "mysql" else "postgresql-server"
    database = contextmanager(make_database)
    with database(backend, request, tmp_path) as control:
        codes = herd_of_eight(control, EAGER)
        assert codes != [0] * 8 and 12 in codes, codes  # the leader's command failed
        assert "accounts" not in tables(control)  # the baseline skipped it: not "empty"

    with database(backend, request, tmp_path) as alone:  # without herd: it passes
        run = subprocess.run([sys.executable, UPGRADE], check=False, capture_output=True,
                             text=True, env={**os.environ, "DATABASE_URL": render(alone)},
                             timeout=120)
        assert run.returncode == 0, run.stderr
        assert "new database" in run.stderr
