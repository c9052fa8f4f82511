"""Real env.py files, as projects write them, under herd.

Each project in tests/projects/ is a small but complete Alembic project in one of the
shapes found in the wild: the async template, a URL from the application's settings, the
cookbook's shared connection, branches, a version table in its own schema that env.py
creates, CREATE INDEX CONCURRENTLY, a renamed version table, an env.py without offline mode.
(search_path, online-only version_table_schema and tenant loops: tests/test_version_context.py.)
Tests marked ``herd`` release N real processes at once (tests/herd_harness.py).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd import (
    CommandFailedError,
    ConfigurationError,
    RevisionNotFoundError,
)
from conftest import PROJECTS, make_database, render, rows
from herd_harness import Result, release

fresh_database = contextlib.contextmanager(make_database)


def ini(project: str) -> str:
    return str(PROJECTS / project / "alembic.ini")



def scalar(url: URL, sql: str) -> Any:
    return rows(url, sql)[0][0]


def pg_tables(url: URL, schema: str) -> set[str]:
    return {r[0] for r in rows(url, "SELECT table_name FROM information_schema.tables "
                                    f"WHERE table_schema = '{schema}'")}


def history(url: URL) -> list[tuple[str, str]]:
    """The attempt log, wherever herd put it (beside the version table: 'app' for some)."""
    table = "herd_history"
    if url.get_backend_name() == "postgresql":
        found = rows(url, "SELECT table_schema FROM information_schema.tables "
                          "WHERE table_name = 'herd_history'")
        table = f"{found[0][0]}.herd_history" if len(found) == 1 else table
    return [(r[0], r[1]) for r in rows(url, f"SELECT revision, status FROM {table} "
                                            "ORDER BY id")]


def assert_one_migrated(results: list[Result], n: int, revisions: list[str],
                        heads: list[str]) -> None:
    """Every replica exited 0, exactly one migrated ``revisions``, all ended at ``heads``."""
    failures = [(r.returncode, r.report, r.stderr[-2000:]) for r in results if r.returncode]
    assert not failures, f"{len(failures)} of {n} failed: {failures[:3]}"
    actions = Counter(r.report["action"] for r in results)
    assert actions["migrated"] == 1, actions
    assert actions["migrated"] + actions["waited"] + actions["current"] == n, actions
    leader = next(r for r in results if r.report["action"] == "migrated")
    assert leader.report["revisions"] == revisions
    assert all(sorted(r.report["heads"]) == heads for r in results)


# -- 1. the async template ---------------------------------------------------------------

ASYNC = ini("asyncenv")
ASYNC_REVISIONS = ["a1", "b2", "c3"]


def asyncpg(url: URL) -> str:
    return render(url.set(drivername="postgresql+asyncpg"))


@pytest.mark.sqla2_only  # the 1.4 run installs no asyncpg (async env.py untried on 1.4)
def test_async_env_migrates_with_an_asyncpg_url(pg: URL) -> None:
    """The `alembic init -t async` env.py with a postgresql+asyncpg URL in the config migrates
    under herd, which coordinates on its own sync connection."""
    cfg = Config(ASYNC)
    cfg.set_main_option("sqlalchemy.url", asyncpg(pg).replace("%", "%%"))
    outcome = alembic_herd.upgrade(cfg, lock_timeout=30)
    assert outcome.action == "migrated"
    assert list(outcome.revisions) == ASYNC_REVISIONS
    assert rows(pg, "SELECT version_num FROM alembic_version") == [("c3",)]
    assert scalar(pg, "SELECT count(*) FROM items WHERE name = 'seeded'") == 1
    assert history(pg) == [(rev, "applied") for rev in ASYNC_REVISIONS]
    again = alembic_herd.upgrade(ASYNC, url=asyncpg(pg), lock_timeout=30)
    assert again.action == "current"


@pytest.mark.sqla2_only  # the 1.4 run installs no asyncpg (async env.py untried on 1.4)
@pytest.mark.herd
def test_async_env_herd_of_8(pg: URL) -> None:
    """8 replicas with the async env.py and an asyncpg URL: all exit 0, one migrates, the data
    row exists once."""
    results = release(8, ["herd", ASYNC, asyncpg(pg)], timeout=240)
    assert_one_migrated(results, 8, ASYNC_REVISIONS, ["c3"])
    assert scalar(pg, "SELECT count(*) FROM items WHERE name = 'seeded'") == 1
    assert history(pg) == [(rev, "applied") for rev in ASYNC_REVISIONS]


# -- 2. the URL comes from the application's settings --------------------------------------

@pytest.fixture
def myapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean import of tests/projects/appsettings/myapp for each test (its settings module
    reads the environment at import, as real ones do)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        monkeypatch.delitem(sys.modules, name)
    yield monkeypatch
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        del sys.modules[name]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.parametrize("style", ["set_main_option", "configure_url"])
def test_url_from_the_application_settings(db: URL, style: str,
                                           myapp: pytest.MonkeyPatch) -> None:
    """Called without url=, herd migrates the database named by the application's settings,
    whether env.py writes it into the config at import or passes it to configure(url=)."""
    myapp.setenv("MYAPP_DATABASE_URL", render(db))
    myapp.setenv("MYAPP_ALEMBIC_STYLE", style)
    outcome = alembic_herd.upgrade(ini("appsettings"), lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions == ("n1",)
    assert scalar(db, "SELECT count(*) FROM notes WHERE body = 'seeded'") == 1
    assert alembic_herd.status(ini("appsettings")).url == db.render_as_string()
    assert alembic_herd.upgrade(ini("appsettings"), lock_timeout=30).action == "current"


# -- 3. config.attributes['connection'] (the cookbook) -------------------------------------

@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_config_attributes_connection_is_honoured(db: URL) -> None:
    """A Config carrying config.attributes['connection'] (the cookbook pattern): herd finds the
    database from that connection and env.py migrates on that very connection."""
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            cfg = Config(ini("cookbook"))
            cfg.attributes["connection"] = conn
            outcome = alembic_herd.upgrade(cfg, lock_timeout=30)
            assert outcome.action == "migrated"
            assert outcome.revisions == ("k1", "k2")
            assert cfg.attributes["migrated_on"] is conn
            assert alembic_herd.upgrade(cfg, lock_timeout=30).action == "current"
    finally:
        engine.dispose()
    assert rows(db, "SELECT version_num FROM alembic_version") == [("k2",)]
    assert scalar(db, "SELECT count(*) FROM widgets WHERE name = 'seeded'") == 1


def test_config_attributes_connection_inside_a_transaction_is_refused(pg: URL) -> None:
    """A config.attributes['connection'] already inside a transaction (the cookbook's
    engine.begin()) is refused with ConfigurationError before any revision runs, since its
    commit would come after herd released the lock."""
    engine = sa.create_engine(pg)
    try:
        with pytest.raises(ConfigurationError, match=r"engine\.connect\(\)"), \
                engine.begin() as conn:
            cfg = Config(ini("cookbook"))
            cfg.attributes["connection"] = conn
            alembic_herd.upgrade(cfg, lock_timeout=30)
    finally:
        engine.dispose()
    assert pg_tables(pg, "public") <= {"herd_history", "herd_revisions"}
    if "herd_history" in pg_tables(pg, "public"):
        assert history(pg) == []


# -- 4. branches: two heads, no merge -------------------------------------------------------

BRANCHES = ini("branches")


def test_branches_target_heads_migrates_both(pg: URL) -> None:
    """Target 'heads' applies the root and both branches; the database ends with two heads."""
    outcome = alembic_herd.upgrade(BRANCHES, url=render(pg), target="heads", lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions[0] == "r0"
    assert set(outcome.revisions) == {"r0", "b1", "b2", "s1"}
    assert outcome.revisions.index("b1") < outcome.revisions.index("b2")
    assert sorted(outcome.heads) == ["b2", "s1"]
    assert sorted(rows(pg, "SELECT version_num FROM alembic_version")) == [("b2",), ("s1",)]
    assert {"accounts", "invoices", "search_terms"} <= pg_tables(pg, "public")
    assert alembic_herd.upgrade(BRANCHES, url=render(pg), target="heads").action == "current"


def test_branches_target_head_is_ambiguous(pg: URL) -> None:
    """Target 'head' with two heads is a RevisionNotFoundError naming both heads and the ways
    out ('heads', 'branch@head'), raised before the database is touched."""
    with pytest.raises(RevisionNotFoundError) as err:
        alembic_herd.upgrade(BRANCHES, url=render(pg), target="head", lock_timeout=30)
    message = str(err.value)
    assert "ambiguous" in message
    assert "b2" in message and "s1" in message
    assert "'heads'" in message and "branch@head" in message
    assert pg_tables(pg, "public") == set()


def test_branches_one_branch_at_a_time(pg: URL) -> None:
    """'billing@head' applies only the root and the billing branch; 'search@head' then adds
    the search branch; 'heads' is then current."""
    url = render(pg)
    billing = alembic_herd.upgrade(BRANCHES, url=url, target="billing@head", lock_timeout=30)
    assert billing.action == "migrated"
    assert billing.revisions == ("r0", "b1", "b2")
    assert billing.heads == ("b2",)
    assert "search_terms" not in pg_tables(pg, "public")
    search = alembic_herd.upgrade(BRANCHES, url=url, target="search@head", lock_timeout=30)
    assert search.action == "migrated"
    assert search.revisions == ("s1",)
    assert sorted(search.heads) == ["b2", "s1"]
    assert alembic_herd.upgrade(BRANCHES, url=url, target="billing@head").action == "current"
    assert alembic_herd.upgrade(BRANCHES, url=url, target="heads").action == "current"


@pytest.mark.herd
def test_branches_herd_of_8_to_heads(pg: URL) -> None:
    """8 replicas upgrading to 'heads': all exit 0, one migrates both branches."""
    results = release(8, ["herd", BRANCHES, render(pg), "heads"], timeout=240)
    failures = [(r.returncode, r.report, r.stderr[-2000:]) for r in results if r.returncode]
    assert not failures, failures[:3]
    actions = Counter(r.report["action"] for r in results)
    assert actions["migrated"] == 1, actions
    leader = next(r for r in results if r.report["action"] == "migrated")
    assert sorted(leader.report["revisions"]) == ["b1", "b2", "r0", "s1"]
    assert all(sorted(r.report["heads"]) == ["b2", "s1"] for r in results)
    assert sorted(h for h, s in history(pg) if s == "applied") == ["b1", "b2", "r0", "s1"]


# -- 5. the incident: schema 'app' created by env.py ---------------------------------------

APPSCHEMA = ini("appschema")
APPSCHEMA_REVISIONS = ["s1", "s2", "s3"]


def test_appschema_probe_learns_the_schema_without_touching_the_database(pg: URL) -> None:
    """herd learns 'app.alembic_version' from env.py's offline mode: status reports it and
    the schema env.py would create online still does not exist."""
    status = alembic_herd.status(APPSCHEMA, url=render(pg))
    assert status.version_table == "app.alembic_version"
    assert list(status.pending) == APPSCHEMA_REVISIONS
    assert scalar(pg, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app'") == 0


@pytest.mark.sqla2_only  # the project's env.py calls Connection.commit() (2.x)
@pytest.mark.herd
def test_appschema_herd_of_16(pg: URL, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """16 replicas of the incident's project on a fresh database: all exit 0, one migrates,
    the version table is app.alembic_version and the data row exists once."""
    for trial in range(2):
        with fresh_database("postgresql", request, tmp_path) as url:
            results = release(16, ["herd", APPSCHEMA, render(url)], timeout=240)
            assert_one_migrated(results, 16, APPSCHEMA_REVISIONS, ["s3"])
            assert rows(url, "SELECT version_num FROM app.alembic_version") == [("s3",)]
            assert scalar(url, "SELECT count(*) FROM app.settings WHERE name = 'seeded'") == 1
            assert "alembic_version" not in pg_tables(url, "public"), f"trial {trial}"
            assert history(url) == [(rev, "applied") for rev in APPSCHEMA_REVISIONS]


@pytest.mark.herd
def test_appschema_control_plain_alembic_fails(pg: URL, request: pytest.FixtureRequest,
                                              tmp_path: Path) -> None:
    """Control: 16 plain `alembic upgrade head` processes of the same project break (the
    incident), so the herd test above can fail."""
    broken = []
    for trial in range(2):
        with fresh_database("postgresql", request, tmp_path) as url:
            results = release(16, ["alembic", APPSCHEMA, render(url)], timeout=240)
            failed = [r.report.get("error", "")[:120] for r in results if r.returncode]
            if failed:
                broken.append((trial, len(failed), failed[0]))
                break
    assert broken, "plain alembic survived every trial: the herd test cannot tell a race"


# -- 6. CREATE INDEX CONCURRENTLY in an autocommit block -----------------------------------

CONCURRENTLY = ini("concurrently")


@pytest.mark.herd
@pytest.mark.timeout(300)
@pytest.mark.parametrize("tpm", [False, True], ids=["one-transaction", "transaction-per-migration"])
def test_create_index_concurrently_under_a_herd_of_8(pg: URL, tpm: bool) -> None:
    """8 replicas, one migration running CREATE INDEX CONCURRENTLY in an autocommit block:
    the waiters hold no transaction it must wait for, so it completes and the index is valid."""
    env = {"HERD_TEST_TPM": "1" if tpm else "0"}
    results = release(8, ["herd", CONCURRENTLY, render(pg)], env=env, timeout=180)
    assert_one_migrated(results, 8, ["c1", "c2", "c3"], ["c3"])
    valid = rows(pg, "SELECT i.indisvalid, i.indisready FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_events_kind'")
    assert valid == [(True, True)]
    assert scalar(pg, "SELECT count(*) FROM events WHERE kind = 'seeded'") == 1
    assert history(pg) == [(rev, "applied") for rev in ["c1", "c2", "c3"]]


# -- 7. wrapping another migration command -------------------------------------------------

HERDSET = ini("herdset")
HERDSET_REVISIONS = ["a1", "b2", "c3", "d4"]
ALEMBIC_UPGRADE = (
    "import os, sys; from alembic import command; from alembic.config import Config; "
    "assert os.environ['HERD_LOCK_HELD'] == '1'; "
    "cfg = Config(sys.argv[1]); cfg.set_main_option('sqlalchemy.url', "
    "sys.argv[2].replace('%', '%%')); command.upgrade(cfg, 'head')"
)


@pytest.mark.herd
def test_wrapped_command_under_a_herd_of_8(pg: URL) -> None:
    """8 replicas each wrapping `python -c alembic.command.upgrade(...)`: all exit 0, only the
    lock holder runs the command, the data row exists once."""
    command = [sys.executable, "-c", ALEMBIC_UPGRADE, HERDSET, render(pg)]
    results = release(8, ["command", HERDSET, render(pg), "head", "--", *command], timeout=240)
    assert_one_migrated(results, 8, HERDSET_REVISIONS, ["d4"])
    assert rows(pg, "SELECT version_num FROM alembic_version") == [("d4",)]
    assert scalar(pg, "SELECT count(*) FROM settings WHERE name = 'seeded'") == 1
    assert history(pg) == [("command", "applied")] + [
        (rev, "applied") for rev in HERDSET_REVISIONS]


def test_failing_command_raises_command_failed(pg: URL) -> None:
    """A wrapped command that exits non-zero raises CommandFailedError with its exit code, the
    attempt log records the command as failed and no revision it did not reach, and the
    next plain upgrade still migrates."""
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(CommandFailedError) as err:
        alembic_herd.upgrade(HERDSET, url=render(pg), command=command, lock_timeout=30)
    assert err.value.returncode == 3
    assert "exited 3" in str(err.value)
    assert history(pg) == [("command", "failed")]
    assert "alembic_version" not in pg_tables(pg, "public")
    outcome = alembic_herd.upgrade(HERDSET, url=render(pg), lock_timeout=30)
    assert outcome.action == "migrated"
    assert list(outcome.revisions) == HERDSET_REVISIONS


# -- 8. where the version table is ----------------------------------------------------------

@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_renamed_version_table_is_learnt_from_env_py(db: URL) -> None:
    """env.py's version_table='my_versions' is learnt by the offline probe: herd migrates,
    then reads my_versions and finds the database current."""
    url = render(db)
    assert alembic_herd.status(ini("customversions"), url=url).version_table == "my_versions"
    outcome = alembic_herd.upgrade(ini("customversions"), url=url, lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions == ("v1", "v2")
    assert rows(db, "SELECT version_num FROM my_versions") == [("v2",)]
    assert alembic_herd.upgrade(ini("customversions"), url=url).action == "current"
    assert alembic_herd.status(ini("customversions"), url=url).is_current
    with pytest.raises(sa.exc.ProgrammingError):
        rows(db, "SELECT version_num FROM alembic_version")


ONLINESCHEMA = ini("onlineschema")


@pytest.mark.sqla2_only  # env.py calls Connection.commit() (2.x)
def test_online_only_schema_is_learnt_from_env_py_online(pg: URL) -> None:
    """env.py without offline mode that keeps the version table in schema 'app' online: herd
    learns app.alembic_version by running env.py in read mode, migrates, and finds the
    database current afterwards (it used to refuse: the offline probe could not tell)."""
    url = render(pg)
    outcome = alembic_herd.upgrade(ONLINESCHEMA, url=url, lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions == ("v1", "v2")
    assert rows(pg, "SELECT version_num FROM app.alembic_version") == [("v2",)]
    assert "alembic_version" not in pg_tables(pg, "public")
    assert alembic_herd.status(ONLINESCHEMA, url=url).version_table == "app.alembic_version"
    assert alembic_herd.upgrade(ONLINESCHEMA, url=url).action == "current"


@pytest.mark.sqla2_only  # env.py calls Connection.commit() (2.x)
def test_a_version_table_herd_does_not_watch_is_refused_before_anything_is_applied(
        pg: URL) -> None:
    """Told to watch another schema (--version-table-schema elsewhere) than the one env.py's
    migration context uses ('app'), the leader refuses with ConfigurationError naming both
    tables before any revision runs: waiters would never see the result. ('elsewhere'
    exists: herd's tables go beside the version table it was told to watch.)"""
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA elsewhere"))
    engine.dispose()
    with pytest.raises(ConfigurationError) as err:
        alembic_herd.upgrade(ONLINESCHEMA, url=render(pg), version_table_schema="elsewhere",
                             lock_timeout=30)
    message = str(err.value)
    assert "'app.alembic_version" in message
    assert "'elsewhere.alembic_version'" in message
    assert pg_tables(pg, "app") == set()
    assert pg_tables(pg, "public") <= {"herd_history", "herd_revisions"}
    if "herd_history" in pg_tables(pg, "public"):
        assert all(status != "applied" for _, status in history(pg))


@pytest.mark.sqla2_only  # env.py calls Connection.commit() (2.x)
def test_online_only_schema_works_with_explicit_version_table_schema(pg: URL) -> None:
    """The same env.py migrates when version_table_schema='app' is passed to herd, and herd
    then finds the database current in app.alembic_version."""
    url = render(pg)
    outcome = alembic_herd.upgrade(ONLINESCHEMA, url=url, version_table_schema="app",
                                   lock_timeout=30)
    assert outcome.action == "migrated"
    assert outcome.revisions == ("v1", "v2")
    assert rows(pg, "SELECT version_num FROM app.alembic_version") == [("v2",)]
    assert scalar(pg, "SELECT count(*) FROM app.things WHERE name = 'seeded'") == 1
    again = alembic_herd.upgrade(ONLINESCHEMA, url=url, version_table_schema="app")
    assert again.action == "current"
