"""The integrations (``alembic_herd.integrations``): the readiness probe and its WSGI/ASGI
wrappers, the Starlette/FastAPI routes and lifespan, and the Celery hooks - against a fresh
database on the embedded PostgreSQL, with MagFlow's migrations (examples/magflow)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
import warnings
import wsgiref.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from celery import Celery, beat, signals
from fastapi import FastAPI
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool
from starlette.applications import Starlette

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

import alembic_herd
from alembic_herd.integrations import celery as herd_celery
from alembic_herd.integrations.readiness import ASGIReadiness, ReadinessProbe, WSGIReadiness
from alembic_herd.integrations.starlette import health_router, health_routes, herd_lifespan
from conftest import render

ROOT = Path(__file__).resolve().parent.parent
MAGFLOW = ROOT / "examples" / "magflow"
INI = str(MAGFLOW / "alembic.ini")
REVISIONS = ["0001_users", "0002_catalogue", "0003_seed_catalogue", "0004_heartbeats",
             "0005_concurrent_indexes", "0006_orders_status_check"]
HEAD = REVISIONS[-1]
PASSWORD = "pr0be-s3cret-pw"

# MagFlow's env.py imports its package (magflow.db, magflow.settings)
if str(MAGFLOW) not in sys.path:
    sys.path.insert(0, str(MAGFLOW))

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def db(pg: URL) -> str:
    """A fresh database on the embedded PostgreSQL, as a URL that carries a password (the
    server trusts local connections, so the password is accepted and must never leak)."""
    return render(pg.set(password=PASSWORD))


@pytest.fixture
def probe(db: str) -> Iterator[ReadinessProbe]:
    p = ReadinessProbe(INI, url=db)
    yield p
    p.close()


def migrate(url: str) -> alembic_herd.Outcome:
    return alembic_herd.upgrade(INI, url=url, lock_timeout=60)


def assert_no_secret(body: str | bytes, url: str) -> None:
    text = body.decode() if isinstance(body, bytes) else body
    assert PASSWORD not in text
    assert url not in text
    assert "postgresql" not in text


# -- the probe ----------------------------------------------------------------------------


def test_probe_reports_not_ready_on_an_empty_database_and_ready_after_migration(
        probe: ReadinessProbe, db: str) -> None:
    """The probe answers 'not ready' with every revision pending before the migration and
    'ready' with current == expected after it, never showing the URL or password."""
    before = probe.probe()
    assert before["status"] == "not ready"
    assert before["current"] == []
    assert before["expected"] == [HEAD]
    assert before["pending"] == len(REVISIONS)
    assert "empty database" in before["reason"]
    assert probe.http_status(before) == 503

    migrate(db)
    after = probe.probe()
    assert after == {"status": "ready", "current": [HEAD], "expected": [HEAD], "pending": 0,
                     "version_table": "app.alembic_version"}
    assert probe.http_status(after) == 200
    assert_no_secret(json.dumps(before) + json.dumps(after), db)


def test_probe_reports_pending_revisions_of_a_partly_migrated_database(
        probe: ReadinessProbe, db: str) -> None:
    """A database two revisions behind is 'not ready' with pending == 2 and its real head
    as current."""
    alembic_herd.upgrade(INI, url=db, target="0004_heartbeats", lock_timeout=60)
    result = probe.probe()
    assert result["status"] == "not ready"
    assert result["current"] == ["0004_heartbeats"]
    assert result["pending"] == 2
    assert "migrations pending" in result["reason"]


def test_probe_reports_unreachable_database_without_secrets(pg: URL) -> None:
    """A database that does not exist is 'not ready: database unreachable', and the body
    names neither the URL nor the password."""
    url = render(pg.set(database="herd_no_such_database", password=PASSWORD))
    probe = ReadinessProbe(INI, url=url, connect_timeout=2)
    try:
        result = probe.probe()
    finally:
        probe.close()
    assert result["status"] == "not ready"
    assert result["reason"].startswith("database unreachable")
    assert result["current"] is None and result["expected"] == [HEAD]
    assert_no_secret(json.dumps(result), url)
    assert "herd_no_such_database" not in json.dumps(result)


def test_probe_treats_a_database_ahead_of_the_code_per_allow_ahead(db: str, pg: URL) -> None:
    """A database at a revision the scripts lack is 'not ready' (ahead) by default and
    'ready' with allow_ahead=True, which a rolling deploy's old replicas need."""
    migrate(db)
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE app.alembic_version SET version_num = 'f9_from_future'"))
    engine.dispose()
    strict = ReadinessProbe(INI, url=db)
    lenient = ReadinessProbe(INI, url=db, allow_ahead=True)
    try:
        refused, allowed = strict.probe(), lenient.probe()
    finally:
        strict.close()
        lenient.close()
    assert refused["status"] == "not ready" and refused["ahead"] == ["f9_from_future"]
    assert "ahead of this code" in refused["reason"]
    assert allowed["status"] == "ready" and allowed["ahead"] == ["f9_from_future"]


def test_probe_issues_exactly_one_statement_per_call(probe: ReadinessProbe, db: str,
                                                     pg: URL) -> None:
    """Each probe, the first one included, is exactly one SELECT on the version table, on a
    pool of one connection (before and after the migration)."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(probe.engine, "before_cursor_execute", count)
    for calls in range(1, 6):
        probe.probe()
        assert len(statements) == calls
    assert all("alembic_version" in s and s.lstrip().upper().startswith("SELECT")
               for s in statements)

    migrate(db)
    statements.clear()
    for _ in range(5):
        assert probe.probe()["status"] == "ready"
    assert len(statements) == 5

    assert isinstance(probe.engine.pool, QueuePool) and probe.engine.pool.size() == 1
    admin = sa.create_engine(pg)
    with admin.connect() as conn:
        sessions = conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'herd readiness'")).scalar_one()
    admin.dispose()
    assert sessions == 1


def test_probe_loads_the_scripts_once(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the probe reads the revision files; probing never reads them again."""
    from alembic.script import ScriptDirectory

    loads: list[str] = []
    original = ScriptDirectory.from_config.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, config: Any) -> Any:
        loads.append("load")
        return original(cls, config)

    monkeypatch.setattr(ScriptDirectory, "from_config", classmethod(counting))
    probe = ReadinessProbe(INI, url=db)
    try:
        built = len(loads)
        for _ in range(3):
            probe.probe()
        migrate(db)
        loaded_by_migration = len(loads)
        for _ in range(3):
            assert probe.probe()["status"] == "ready"
    finally:
        probe.close()
    assert built >= 1
    assert len(loads) == loaded_by_migration


# -- WSGI and ASGI ------------------------------------------------------------------------


def _wsgi_get(app: WSGIReadiness, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": "/ready",
                               "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_wsgi_wrapper_answers_503_then_200(probe: ReadinessProbe, db: str) -> None:
    """The WSGI wrapper answers 503 with the not-ready JSON, then 200 once migrated."""
    app = WSGIReadiness(probe)
    status, headers, body = _wsgi_get(app)
    assert status.startswith("503")
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "not ready"
    migrate(db)
    status, headers, body = _wsgi_get(app)
    assert status.startswith("200")
    assert json.loads(body)["current"] == [HEAD]
    assert int(headers["content-length"]) == len(body)
    assert_no_secret(body, db)
    assert _wsgi_get(app, "POST")[0].startswith("405")


def test_asgi_wrapper_answers_503_then_200(probe: ReadinessProbe, db: str) -> None:
    """The ASGI wrapper answers 503 then 200 with the probe's JSON (query in a thread)."""
    app = ASGIReadiness(probe)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            return await client.get("/ready")

    before = asyncio.run(get())
    assert before.status_code == 503 and before.json()["status"] == "not ready"
    migrate(db)
    after = asyncio.run(get())
    assert after.status_code == 200
    assert after.json()["current"] == after.json()["expected"] == [HEAD]
    assert after.headers["cache-control"] == "no-store"
    assert_no_secret(after.text, db)


# -- Starlette and FastAPI ----------------------------------------------------------------


def test_fastapi_health_router_serves_live_and_ready(probe: ReadinessProbe, db: str) -> None:
    """health_router gives /api/v1/health/live (always 200) and /ready (503, then 200)."""
    app = FastAPI()
    app.include_router(health_router(probe))
    with TestClient(app) as client:
        assert client.get("/api/v1/health/live").json() == {"status": "alive"}
        assert client.get("/api/v1/health/ready").status_code == 503
        migrate(db)
        ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "/api/v1/health/ready" in app.openapi()["paths"]


def test_starlette_routes_serve_live_and_ready(probe: ReadinessProbe, db: str) -> None:
    """health_routes works in a plain Starlette app under a custom prefix."""
    migrate(db)
    app = Starlette(routes=health_routes(probe, prefix="/healthz"))
    with TestClient(app) as client:
        assert client.get("/healthz/live").status_code == 200
        ready = client.get("/healthz/ready")
    assert ready.status_code == 200 and ready.json()["pending"] == 0


def test_lifespan_waits_for_the_schema_then_the_app_starts(probe: ReadinessProbe,
                                                           db: str) -> None:
    """herd_lifespan(mode='wait') holds the start-up until another process migrates; then
    the app starts and its ready endpoint answers 200."""
    app = FastAPI(lifespan=herd_lifespan(INI, url=db, mode="wait", timeout=60,
                                         poll_interval=0.1))
    app.include_router(health_router(probe))
    result: dict[str, Any] = {}
    started, release = threading.Event(), threading.Event()

    def serve() -> None:  # TestClient runs the lifespan's start-up on entering
        try:
            with TestClient(app) as client:
                result["ready"] = client.get("/api/v1/health/ready")
                started.set()
                release.wait(60)
        except BaseException as exc:
            result["error"] = exc
            started.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert not started.wait(1.0), "started before the schema was current"
        assert migrate(db).action == "migrated"  # this test process is the migrating replica
        assert started.wait(60)
        assert "error" not in result, result.get("error")
        assert result["ready"].status_code == 200
    finally:
        release.set()
        thread.join(10)


def test_lifespan_failure_stops_the_start_up(db: str) -> None:
    """When the schema does not become current in time, start-up fails with herd's error
    and the app never serves."""
    app = FastAPI(lifespan=herd_lifespan(INI, url=db, mode="wait", timeout=0.5))
    with pytest.raises(alembic_herd.WaitTimeoutError) as info, TestClient(app):
        pass
    assert PASSWORD not in str(info.value)


ASYNC_ENV = '''
import asyncio
from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config

def do_run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

async def run_async():
    engine = async_engine_from_config(config.get_section(config.config_ini_section, {}),
                                      prefix="sqlalchemy.", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run)
    await engine.dispose()

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async())
'''

ASYNC_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "e1"
down_revision = None
branch_labels = None
depends_on = None

def upgrade():
    op.create_table("events", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("events")
'''


def test_lifespan_auto_migrates_an_async_env_py_from_a_running_loop(
        tmp_path: Path, pg: URL) -> None:
    """herd_lifespan(mode='auto') migrates at start-up through an async env.py (which calls
    asyncio.run) without nesting event loops: the upgrade runs in a worker thread."""
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ASYNC_ENV)
    (tmp_path / "migrations" / "versions" / "e1_events.py").write_text(ASYNC_REVISION)
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {tmp_path / 'migrations'}\n")
    url = render(pg.set(drivername="postgresql+asyncpg"))
    app = FastAPI(lifespan=herd_lifespan(str(ini), url=url, mode="auto", lock_timeout=60))

    @app.get("/events")
    def events() -> int:
        engine = sa.create_engine(pg)
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        engine.dispose()
        return int(count)

    with TestClient(app) as client:
        assert client.get("/events").json() == 0
    assert alembic_herd.status(str(ini), url=url).current_heads == ("e1",)


# -- Celery -------------------------------------------------------------------------------


@pytest.fixture
def celery_app() -> Iterator[Celery]:
    app = Celery("herd-test", broker="memory://", set_as_current=False)
    yield app
    for signal in (signals.worker_init, signals.beat_init):
        for role in ("worker", "beat"):
            signal.disconnect(dispatch_uid=f"alembic_herd:{role}:{id(app)}")


def test_celery_worker_init_blocks_until_the_schema_is_current(celery_app: Celery,
                                                               db: str) -> None:
    """A real WorkController of a Celery app with the hooks installed does not finish
    initialising until another process has migrated; it never migrates itself."""
    herd_celery.install(celery_app, INI, url=db, timeout=60, poll_interval=0.1)
    done: dict[str, Any] = {}

    def build_worker() -> None:
        try:
            done["worker"] = celery_app.WorkController(pool_cls="solo", concurrency=1,
                                                       without_mingle=True,
                                                       without_gossip=True)
        except BaseException as exc:
            done["error"] = exc

    thread = threading.Thread(target=build_worker, daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive() and not done, "worker initialised on an empty database"
    assert alembic_herd.status(INI, url=db).current_heads == ()  # the hook did not migrate
    migrate(db)
    thread.join(60)
    assert "error" not in done, done.get("error")
    assert done["worker"].app is celery_app
    history = alembic_herd.history(INI, url=db)
    assert sorted(a.revision for a in history) == sorted(REVISIONS)
    assert {a.pid for a in history} == {os.getpid()}


def test_celery_beat_init_waits_and_ignores_other_apps(celery_app: Celery, db: str,
                                                       tmp_path: Path) -> None:
    """The beat hook waits for the schema for its own app's beat service, and does nothing
    for another Celery app's signal."""
    handlers = herd_celery.install(celery_app, INI, url=db, timeout=60, poll_interval=0.1,
                                   worker=False)
    assert set(handlers) == {"beat"}
    other = Celery("other", broker="memory://", set_as_current=False)
    signals.beat_init.send(sender=beat.Service(app=other,  # returns at once
                                               schedule_filename=str(tmp_path / "other")))
    service = beat.Service(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    done = threading.Event()

    def start_beat() -> None:
        signals.beat_init.send(sender=service)
        done.set()

    thread = threading.Thread(target=start_beat, daemon=True)
    thread.start()
    assert not done.wait(1.0), "beat started on an empty database"
    migrate(db)
    assert done.wait(60)


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_celery_start_up_aborts_with_herds_message(role: str, db: str, tmp_path: Path) -> None:
    """A real `celery worker` / `celery beat` whose schema never becomes current exits with
    herd's exit code and one clear line, instead of running against the wrong schema."""
    (tmp_path / "herdapp.py").write_text(
        "from celery import Celery\n"
        "from alembic_herd.integrations import celery as herd_celery\n"
        "app = Celery('herdapp', broker='memory://')\n"
        f"herd_celery.install(app, {INI!r}, url={db!r}, timeout='1s')\n")
    argv = [sys.executable, "-m", "celery", "-A", "herdapp", role, "--loglevel", "INFO"]
    argv += (["--pool", "solo", "--without-mingle", "--without-gossip"] if role == "worker"
             else ["--schedule", str(tmp_path / "schedule")])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(argv, check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == alembic_herd.WaitTimeoutError.exit_code, output
    assert f"not starting the {role}" in output
    assert re.search(rf"not at head after [\d.]+ s: {len(REVISIONS)} revision\(s\) pending",
                     output), output
    assert PASSWORD not in output
    assert "Received task" not in output and "Sending due task" not in output
