"""The fast lane (``src/alembic_herd/_fastlane.py``): at head, ``herd check`` / ``migrate`` /
``run`` answer from the stamp with the raw driver, print what the normal path prints, and
never import SQLAlchemy or Alembic; on any change of what decides the answer they fall back
to the normal path, which then answers correctly (migrates a new revision, reads another
tenant's version table).

Real processes (the ``herd`` console script) against real databases. ``HERD_FAST_LANE_DEBUG=1``
makes the lane say on stderr whether it answered or why it fell back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from conftest import PROJECTS, render, revision_file

SCRIPT = Path(sys.executable).with_name("herd")
ANSWERED = "herd: fast lane: answered"
NEW_REVISION = revision_file(
    "e5", "d4", "e5", 'op.create_table("fastlane_e5", sa.Column("id", sa.Integer, '
    'primary_key=True))', 'op.drop_table("fastlane_e5")')

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no herd console script")


def project(tmp_path: Path) -> Path:
    """A copy of the herdset project (four revisions, a1..d4) that a test may change."""
    where = tmp_path / "proj"
    shutil.copytree(PROJECTS / "herdset", where,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return where


def herd(where: Path, *args: str, url: URL | None, env: dict[str, str] | None = None,
         importtime: bool = False) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items()
             if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
             and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    child["HERD_FAST_LANE_DEBUG"] = "1"
    if url is not None:
        child["DATABASE_URL"] = render(url)
    child.update(env or {})
    argv = [str(SCRIPT), *args[:1], "-c", str(where / "alembic.ini"), *args[1:]]
    if importtime:
        argv = [sys.executable, "-X", "importtime", *argv]
    return subprocess.run(argv, env=child, cwd=where, capture_output=True, text=True,
                          timeout=120, check=False)


def lane(result: subprocess.CompletedProcess[str]) -> str:
    """The lane's own debug line."""
    return next((line for line in result.stderr.splitlines()
                 if line.startswith("herd: fast lane:")), "")


def comparable(result: subprocess.CompletedProcess[str]) -> tuple[int, str, list[str]]:
    """Exit code, stdout, and stderr without the lane's line, times and pids."""
    err = []
    for line in result.stderr.splitlines():
        if line.startswith(("herd: fast lane:", "import time:")):
            continue
        if line.startswith("{"):
            data = json.loads(line)
            data.pop("time"), data.pop("replica")
            err.append(json.dumps(data, sort_keys=True))
        else:
            err.append(re.sub(r"^\d\d:\d\d:\d\d herd\[[^\]]+\]", "T herd[R]", line))
    return result.returncode, result.stdout, err


def stamps(url: URL) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT revision FROM herd_revisions WHERE scope = 'herd:stamp'")).scalars())
    finally:
        engine.dispose()


VERBS = [["check"], ["migrate"], ["run", "--", sys.executable, "-c", "print('app started')"]]
MORE = [["check", "--log-format", "json", "heads"], ["migrate", "-q"],
        ["migrate", "--log-format", "json"],
        ["run", "--mode", "wait", "--", sys.executable, "-c", "print('app started')"]]
"""Output variants, on one backend (the output does not depend on it)."""


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_at_head_the_lane_answers_as_the_normal_path_does(db: URL, tmp_path: Path,
                                                          backend: str) -> None:
    where = project(tmp_path)
    first = herd(where, "migrate", url=db)
    assert first.returncode == 0, first.stderr
    assert "migrated 4 revision(s) to d4" in first.stdout
    assert len(stamps(db)) == 1  # written by the leader, in herd's existing graph
    for args in VERBS + (MORE if backend == "postgresql" else []):
        normal = herd(where, *args, url=db, env={"HERD_FAST_LANE": "0"})
        fast = herd(where, *args, url=db)
        assert lane(fast) == ANSWERED, (args, fast.stderr)
        assert comparable(fast) == comparable(normal), args
        assert comparable(fast)[0] == 0
    proof = herd(where, "check", url=db, importtime=True)
    assert lane(proof) == ANSWERED
    imported = [line.split("|")[-1].strip() for line in proof.stderr.splitlines()
                if line.startswith("import time:")]
    assert imported and not [m for m in imported
                             if m.split(".")[0] in ("sqlalchemy", "alembic", "click")]
    assert proof.stdout == "current: alembic_version at d4\n"


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_a_new_revision_file_is_migrated_by_the_normal_path(db: URL, tmp_path: Path) -> None:
    """The control for the fingerprint: without the revision files in it, the lane would say
    'already current' here and the new revision would never run."""
    where = project(tmp_path)
    assert herd(where, "migrate", url=db).returncode == 0
    assert lane(herd(where, "check", url=db)) == ANSWERED
    (where / "migrations" / "versions" / "e5_new.py").write_text(NEW_REVISION)
    behind = herd(where, "check", url=db)
    assert "fell back: no stamp" in lane(behind)
    assert (behind.returncode, behind.stdout) == (1, "not current: 1 revision(s) pending (e5)\n")
    moved = herd(where, "migrate", url=db)
    assert "fell back" in lane(moved)
    assert moved.returncode == 0 and "migrated 1 revision(s) to e5" in moved.stdout
    again = herd(where, "run", "--", sys.executable, "-c", "print('up')", url=db)
    assert lane(again) == ANSWERED
    assert again.stdout == "up\n"
    assert "database already current at e5; starting" in again.stderr


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_lane_falls_back_when_its_inputs_change(db: URL, tmp_path: Path) -> None:
    where = project(tmp_path)
    assert herd(where, "migrate", url=db).returncode == 0
    assert lane(herd(where, "check", url=db)) == ANSWERED

    # env.py names HERD_TEST_SCHEMA: another value is another version table (a tenant
    # chosen by an environment variable), behind; the lane must not answer for it
    tenant = herd(where, "check", url=db, env={"HERD_TEST_SCHEMA": "wtfastlane_tenant"})
    assert "fell back: no stamp" in lane(tenant)
    assert tenant.returncode == 1
    assert tenant.stdout.startswith("not current: 4 revision(s) pending")

    # the lane switched off
    off = herd(where, "migrate", url=db, env={"HERD_FAST_LANE": "0"})
    assert lane(off) == "herd: fast lane: off" and off.returncode == 0

    # options and URLs the lane does not read: the normal path answers
    for args, env, why in [
            (["check", "-v"], {}, "-v"),
            (["check"], {"DATABASE_URL": render(db) + ("&" if "?" in render(db) else "?")
                         + "keepalives=1"}, "url query"),
            (["migrate", "--sql"], {}, "option --sql")]:
        result = herd(where, *args, url=db, env=env)
        assert lane(result) == f"herd: fast lane: fell back: {why}", args
        assert result.returncode == 0, result.stderr

    # the stamp gone (or another release's): fall back, and the normal path writes it again
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM herd_revisions WHERE scope = 'herd:stamp'"))
    gone = herd(where, "check", url=db)
    assert "fell back: no stamp" in lane(gone) and gone.returncode == 0
    assert lane(herd(where, "check", url=db)) == ANSWERED

    # a read-only role (the version table, nothing of herd's): the stamp is unreadable, the
    # normal path answers, and nothing is written
    role = "wtfastlane_ro"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'ro-secret-pw'"))
        conn.execute(sa.text(f"GRANT SELECT ON alembic_version TO {role}"))
    try:
        ro = db.set(username=role, password="ro-secret-pw")
        result = herd(where, "check", url=ro)
        assert "fell back: no stamp at head (herd's graph: readonly)" in lane(result)
        assert (result.returncode, result.stdout) == (0, "current: alembic_version at d4\n")
        assert "ro-secret-pw" not in result.stderr + result.stdout
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"REVOKE ALL ON alembic_version FROM {role}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        engine.dispose()

    # env.py changed: another fingerprint
    env_py = where / "migrations" / "env.py"
    env_py.write_text(env_py.read_text() + "\n# changed\n")
    changed = herd(where, "migrate", url=db)
    assert "fell back: no stamp" in lane(changed)
    assert changed.stdout == "database already current at d4\n"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_url_only_env_py_knows_goes_the_normal_way(db: URL, tmp_path: Path) -> None:
    where = project(tmp_path)
    env_py = where / "migrations" / "env.py"
    env_py.write_text("import os\nfrom alembic import context\ncontext.config.set_main_option("
                      "'sqlalchemy.url', os.environ['WTFASTLANE_URL'])\n" + env_py.read_text())
    extra = {"WTFASTLANE_URL": render(db)}
    assert herd(where, "migrate", url=None, env=extra).returncode == 0
    result = herd(where, "check", url=None, env=extra)
    assert lane(result) == "herd: fast lane: fell back: no URL without env.py"
    assert (result.returncode, result.stdout) == (0, "current: alembic_version at d4\n")


URLS = [
    "postgresql+psycopg://postgres@127.0.0.1:5432/app",
    "postgresql://user:secret@db.example.com/app",
    "postgres://user:s%40cr%3At%2F@db:6432/app?sslmode=require&application_name=web",
    "postgresql+psycopg2://u:p@localhost/app?connect_timeout=5",
    "postgresql+psycopg://u:@host/app",
    "postgresql+psycopg://u@/app?host=/var/run/postgresql",
    "postgresql+psycopg://%C3%BCser:p%20w@h:1/db",
    "mysql+pymysql://root@127.0.0.1:3306/test",
    "mariadb+pymysql://app:pa%3Bss@db/app?charset=utf8mb4",
    "sqlite:////tmp/herd/app.db",
    "sqlite:///relative/app.db",
]


@pytest.mark.parametrize("text", URLS)
def test_the_lane_reads_a_url_as_sqlalchemy_does(text: str) -> None:
    """The lane parses URLs without SQLAlchemy (which it must not import): on every URL it
    accepts, each part is what ``sqlalchemy.engine.make_url`` reads."""
    from alembic_herd._fastlane import parse_url

    ours, theirs = parse_url(text), sa.engine.make_url(text)
    backend = {"postgres": "postgresql", "mariadb": "mysql"}.get(
        theirs.get_backend_name(), theirs.get_backend_name())
    assert (ours.backend, ours.user, ours.password, ours.host, ours.port, ours.database) == (
        backend, theirs.username or None, theirs.password, theirs.host or None, theirs.port,
        theirs.database or None), text
    assert dict(ours.query) == dict(theirs.query), text


@pytest.mark.parametrize("text", [
    "postgresql+psycopg://u@h/d%C3%B6", "postgresql+psycopg://u@[::1]:5432/app",
    "postgresql+psycopg://u@h1,h2/app", "postgresql+psycopg://u@h/app?options=-csearch_path",
    "mysql+mysqldb://u@h/app", "sqlite://", "sqlite:///:memory:", "oracle://u@h/app"])
def test_the_lane_leaves_urls_it_does_not_read_to_sqlalchemy(text: str) -> None:
    from alembic_herd._fastlane import Fallback, parse_url

    with pytest.raises(Fallback):
        parse_url(text)


@pytest.mark.parametrize("verb", ["check", "migrate", "run"])
def test_the_lanes_options_are_clicks_options(verb: str) -> None:
    """The lane reads options without click (which it must not import), from a table of its
    own: every option it reads is the click option of that name, with the same destination,
    environment variables and default; every click option it does not read makes it fall
    back. A new option or environment variable added to the CLI alone fails here."""
    import click

    from alembic_herd import _laneargs, cli

    group = next(v for v in vars(cli).values() if isinstance(v, click.Group))
    lane = _laneargs._OPTIONS[verb]
    seen = set()
    for param in group.commands[verb].params:
        if not isinstance(param, click.Option):
            continue
        envvar = param.envvar
        envvars = [envvar] if isinstance(envvar, str) else list(envvar or [])
        for opt in param.opts:
            seen.add(opt)
            if opt not in lane:
                with pytest.raises(_laneargs.Fallback):
                    _laneargs.parse([verb, opt, "x"], {}, Path("/"))
                continue
            assert lane[opt][0] == param.name, (verb, opt)
            assert _laneargs._ENVVARS.get(param.name, []) == envvars, (verb, opt)
            if param.name in _laneargs._DEFAULTS and isinstance(param.default, str | int):
                assert str(_laneargs._DEFAULTS[param.name]) == str(param.default), (verb, opt)
    assert set(lane) <= seen, set(lane) - seen
