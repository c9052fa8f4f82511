"""The catalogue of bad inputs: every way an operator can get herd wrong, run as the real
``herd`` command against real databases.

Each case asserts the documented exit code, exactly one ``herd: error:`` line on stderr (no
traceback), that the URL's password appears nowhere in the output, and, on PostgreSQL, that
the database is exactly as it was before (nothing half-applied). The exit-code tables in
docs/operators.md and README.md are checked against ``errors.EXIT_CODES``.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from alembic_herd import errors
from alembic_herd._history import history_table
from alembic_herd.errors import EXIT_CODES, HerdError
from alembic_herd.locks import LockKey
from conftest import PROJECTS, _server_url, render

ROOT = Path(__file__).parent.parent
PASSWORD = "hunt@er:2pw"  # '@' and ':' un-encoded wherever a case spells the URL out
HERDSET = str(PROJECTS / "herdset" / "alembic.ini")
HERD_TABLES = {"herd_history", "herd_lock", "herd_revisions"}


def herd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``herd ARGS...`` as a real process, without any HERD_* setting of the caller."""
    child_env = {k: v for k, v in os.environ.items()
                 if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
                 and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "alembic_herd.cli", *args], env=child_env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def fragments(password: str, output: str, size: int = 4) -> set[str]:
    """The substrings of ``password`` of ``size`` characters that appear in ``output``."""
    return {password[i:i + size] for i in range(len(password) - size + 1)
            if password[i:i + size] in output}


# -- the state of a PostgreSQL database -------------------------------------------------------


def snapshot(url: URL) -> tuple[set[str], list[str] | None]:
    """The application's tables (herd's own excluded) and the version table's rows (``None``
    when it does not exist)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names()) - HERD_TABLES
            versions = None
            if "alembic_version" in tables:
                versions = sorted(conn.execute(
                    sa.text("SELECT version_num FROM alembic_version")).scalars())
            return tables - {"alembic_version"}, versions
    finally:
        engine.dispose()


def execute(url: URL, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


# -- the catalogue ----------------------------------------------------------------------------


@dataclass
class Context:
    """What a case may ask for: a fresh PostgreSQL database (its URL carries the password),
    the servers, a scratch folder."""

    request: pytest.FixtureRequest
    tmp_path: Path
    pg: URL | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables for herd (env.py reads HERD_TEST_*)."""

    def postgresql(self) -> URL:
        """A fresh database on the embedded PostgreSQL, with a password in its URL (the
        server trusts local connections and ignores it)."""
        if self.pg is None:
            url: URL = self.request.getfixturevalue("pg")
            self.pg = url.set(password=PASSWORD)
        return self.pg

    def server(self, backend: str) -> URL:
        if backend == "postgresql":
            url: URL = self.request.getfixturevalue("embedded_postgres")
            return url
        return _server_url(backend, self.request)


Setup = Callable[[Context], AbstractContextManager[list[str]]]


@dataclass(frozen=True)
class Case:
    code: int
    says: tuple[str, ...]
    """Phrases the error line must contain (case-insensitive)."""
    setup: Setup = field(repr=False)


CASES: dict[str, Case] = {}


def case(code: int, *says: str) -> Callable[[Callable[[Context], Iterator[list[str]]]], Setup]:
    """Register a generator that prepares the case, yields herd's arguments, and cleans up."""

    def register(fn: Callable[[Context], Iterator[list[str]]]) -> Setup:
        name = fn.__name__.removeprefix("case_").replace("_", "-")
        setup = contextmanager(fn)
        CASES[name] = Case(code, says, setup)
        return setup

    return register


@case(4, "check that the server is running")
def case_unreachable_host(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--lock-timeout", "2s",
           "--url", f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/app"]


@case(4, "check the user and password")
def case_wrong_password(ctx: Context) -> Iterator[list[str]]:
    # MySQL/MariaDB: the local PostgreSQL servers trust local connections
    server = ctx.server("mysql")
    user = f"herd_pw_{uuid.uuid4().hex[:8]}"
    execute(server, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'the-right-one'")
    try:
        yield ["migrate", "-c", HERDSET, "--url",
               render(server.set(username=user, password=PASSWORD))]
    finally:
        execute(server, f"DROP USER '{user}'@'%'")


@case(4, "does not exist")
def case_unknown_database(ctx: Context) -> Iterator[list[str]]:
    url = ctx.server("postgresql").set(database=f"herd_missing_{uuid.uuid4().hex[:8]}",
                                       password=PASSWORD)
    yield ["migrate", "-c", HERDSET, "--url", render(url)]


@case(3, "not found; pass -c/--config")
def case_missing_alembic_ini(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", str(ctx.tmp_path / "alembic.ini"),
           "--url", render(ctx.postgresql())]


@case(3, "is not an Alembic migrations folder")
def case_script_location_missing(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", str(PROJECTS / "bad-location" / "alembic.ini"),
           "--url", render(ctx.postgresql())]


@case(3, "SyntaxError in")
def case_revision_with_syntax_error(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", str(PROJECTS / "bad-syntax" / "alembic.ini"),
           "--url", render(ctx.postgresql())]


@case(3, "is ambiguous: the scripts have several heads (h2a, h2b)")
def case_multiple_heads(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", str(PROJECTS / "bad-heads" / "alembic.ini"), "--target", "head",
           "--url", render(ctx.postgresql())]


@case(3, "target revision 'zz404' not found")
def case_unknown_target(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--target", "zz404", "--url", render(ctx.postgresql())]


@case(5, "ahead of this code by zz99: zz99 has no entry in herd's revision graph")
def case_database_ahead_of_code(ctx: Context) -> Iterator[list[str]]:
    url = ctx.postgresql()
    execute(url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('zz99')")
    yield ["wait", "-c", HERDSET, "--timeout", "1m", "--url", render(url)]


@case(14, "this database user may not use herd's attempt log 'herd_history'",
      "grant select, insert, update, delete on herd_history to herd_app_")
def case_attempt_log_of_another_role(ctx: Context) -> Iterator[list[str]]:
    # herd_history was created by another role (an earlier deploy, a DBA) and not granted
    url = ctx.postgresql()
    role = f"herd_app_{uuid.uuid4().hex[:8]}"
    execute(url, f"CREATE ROLE {role} LOGIN", f"GRANT ALL ON SCHEMA public TO {role}")
    engine = sa.create_engine(url)
    history_table().create(engine)
    engine.dispose()
    try:
        yield ["migrate", "-c", HERDSET, "--url", render(url.set(username=role))]
    finally:
        execute(url, "DROP TABLE herd_history", f"DROP OWNED BY {role}", f"DROP ROLE {role}")


@case(3, "attempt log 'herd_history' exists but cannot be read as one",
      "name another with --history-table")
def case_attempt_log_name_taken(ctx: Context) -> Iterator[list[str]]:
    url = ctx.postgresql()
    execute(url, "CREATE TABLE herd_history (id serial PRIMARY KEY, note text)")
    try:
        yield ["migrate", "-c", HERDSET, "--url", render(url)]
    finally:
        execute(url, "DROP TABLE herd_history")


@case(8, "revision x2 failed: RuntimeError: boom: x2 fails on purpose")
def case_migration_raises(ctx: Context) -> Iterator[list[str]]:
    # x1 creates a table, x2 another and raises: the one transaction rolls back both
    yield ["migrate", "-c", str(PROJECTS / "bad-raise" / "alembic.ini"),
           "--url", render(ctx.postgresql())]


@case(14, "may not create herd's tables in schema 'public'",
      "run: grant usage, create on schema public to herd_noddl_")
def case_user_without_ddl_rights(ctx: Context) -> Iterator[list[str]]:
    # PostgreSQL 15+: schema public grants CREATE to its owner only; PUBLIC has CONNECT
    url = ctx.postgresql()
    role = f"herd_noddl_{uuid.uuid4().hex[:8]}"
    admin = ctx.server("postgresql")
    execute(admin, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    try:
        yield ["migrate", "-c", HERDSET, "--url", render(url.set(username=role))]
    finally:
        execute(admin, f"DROP ROLE {role}")


@case(6, "not acquired after 2.00 s; held by server backend", "herd-test-holder")
def case_lock_timeout(ctx: Context) -> Iterator[list[str]]:
    url = ctx.postgresql()
    key = LockKey.for_version_table("alembic_version", None, None).as_int64()
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT",
                              connect_args={"application_name": "herd-test-holder"})
    try:
        with engine.connect() as holder:
            assert holder.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            yield ["migrate", "-c", HERDSET, "--lock-timeout", "2s", "--url", render(url)]
    finally:
        engine.dispose()


@case(3, "invalid value for '--lock'")
def case_unknown_lock_backend(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--lock", "redis", "--url", render(ctx.postgresql())]


@case(3, "is malformed; expected dialect+driver://")
def case_malformed_url(ctx: Context) -> Iterator[list[str]]:
    # the scheme forgotten: the masking must not rely on '://'
    yield ["migrate", "-c", HERDSET, "--url", f"app:{PASSWORD}@db:5432/app"]


@case(3, "'5min' is not a duration")
def case_malformed_duration(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--lock-timeout", "5min", "--url", render(ctx.postgresql())]


@case(3, "SQLAlchemy has no dialect 'cockroachdb'")
def case_unknown_dialect(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--url", f"cockroachdb://app:{PASSWORD}@db:26257/app"]


@case(3, "needs the Python driver 'oracledb'; install it (pip install oracledb)")
def case_dialect_without_driver(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--url", f"oracle+oracledb://app:{PASSWORD}@db:1521/app"]


@case(3, "'--' must be followed by the migration command")
def case_migrate_dash_dash_without_command(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--url", render(ctx.postgresql()), "--"]


@case(3, "herd run needs the command to start after '--'")
def case_run_dash_dash_without_command(ctx: Context) -> Iterator[list[str]]:
    yield ["run", "-c", HERDSET, "--url", render(ctx.postgresql()), "--"]


def project(ctx: Context, ini: str, *, env_py: str | None = None,
            revisions: bool = True) -> str:
    """A project in the scratch folder: ``ini`` as its alembic.ini, herdset's env.py (or
    ``env_py``) and, with ``revisions``, herdset's revision files; returns the ini's path."""
    folder = ctx.tmp_path / "project"
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    source = PROJECTS / "herdset" / "migrations"
    (folder / "migrations" / "env.py").write_text(
        env_py if env_py is not None else (source / "env.py").read_text())
    if revisions:
        for revision in (source / "versions").glob("*.py"):
            (versions / revision.name).write_text(revision.read_text())
    (folder / "alembic.ini").write_text(ini)
    return str(folder / "alembic.ini")


BADENV = str(PROJECTS / "bad-envpy" / "alembic.ini")
SECTION = "[alembic]\nscript_location = %(here)s/migrations\n"


@case(8, "env.py (before any revision ran) failed: RuntimeError: settings.DATABASE_POOL",
      "fix env.py")
def case_env_py_raises(ctx: Context) -> Iterator[list[str]]:
    ctx.env["HERD_TEST_ENV_FAILS"] = "raise"
    yield ["migrate", "-c", BADENV, "--url", render(ctx.postgresql())]


@case(8, "ModuleNotFoundError: No module named 'app_settings_that_do_not_exist'",
      "nothing was applied")
def case_env_py_imports_a_missing_module(ctx: Context) -> Iterator[list[str]]:
    ctx.env["HERD_TEST_ENV_FAILS"] = "import"
    yield ["migrate", "-c", BADENV, "--url", render(ctx.postgresql())]


@case(8, "SyntaxError in", "env.py line 2: expected ':'", "fix env.py")
def case_env_py_with_a_syntax_error(ctx: Context) -> Iterator[list[str]]:
    ini = project(ctx, SECTION, env_py="from alembic import context\nif True\n    pass\n")
    yield ["migrate", "-c", ini, "--url", render(ctx.postgresql())]


@case(8, "Working outside of application context", "herd migrate -- flask db upgrade")
def case_env_py_needs_a_flask_application(ctx: Context) -> Iterator[list[str]]:
    ctx.env["HERD_TEST_ENV_FAILS"] = "flask"
    yield ["migrate", "-c", BADENV, "--url", render(ctx.postgresql())]


@case(3, "sqlalchemy.url in", "write '%%' for each '%' in the URL")
def case_percent_encoded_password_in_alembic_ini(ctx: Context) -> Iterator[list[str]]:
    # '%40' for '@', as in a URL, is a substitution to the ini format
    ini = project(ctx, SECTION + "sqlalchemy.url = postgresql+psycopg://app:"
                  f"{PASSWORD.replace('@', '%40')}@127.0.0.1:1/app\n")
    yield ["migrate", "-c", ini]


@case(3, "has no script_location; add 'script_location = migrations'")
def case_no_script_location(ctx: Context) -> Iterator[list[str]]:
    ini = project(ctx, "[alembic]\nsqlalchemy.url =\n")
    yield ["migrate", "-c", ini, "--url", render(ctx.postgresql())]


@case(3, "has no [alembic] section; add [alembic] with 'script_location = migrations'")
def case_no_alembic_section(ctx: Context) -> Iterator[list[str]]:
    ini = project(ctx, "[loggers]\nkeys = root\n")
    yield ["migrate", "-c", ini, "--url", render(ctx.postgresql())]


@case(3, "has no [tenant] section; sections with a script_location: alembic; pass -n/--name")
def case_unknown_ini_section(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "-n", "tenant", "--url", render(ctx.postgresql())]


@case(3, "has no revisions", "point script_location (or -d/--script-location)")
def case_empty_versions_folder(ctx: Context) -> Iterator[list[str]]:
    ini = project(ctx, SECTION, revisions=False)
    yield ["migrate", "-c", ini, "--url", render(ctx.postgresql())]


@case(3, "is not an Alembic migrations folder", "or -d/--script-location")
def case_script_location_option_names_no_folder(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "-d", str(ctx.tmp_path / "nowhere"),
           "--url", render(ctx.postgresql())]


@case(3, "'alembic_version' from a1, b2", "one row per branch head", "alembic stamp --purge")
def case_version_table_with_two_rows(ctx: Context) -> Iterator[list[str]]:
    url = ctx.postgresql()
    execute(url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('a1'), ('b2')")
    yield ["migrate", "-c", HERDSET, "--url", render(url)]


@case(3, "target revision 'zz404' not found")
def case_unknown_positional_target(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "zz404", "--url", render(ctx.postgresql())]


@case(3, "two targets: REVISION 'b2' and --target 'c3'; give one of them")
def case_positional_and_option_target_differ(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "b2", "--target", "c3", "--url", render(ctx.postgresql())]


@case(3, "--sql prints Alembic's SQL and cannot run the command after '--'")
def case_sql_with_a_wrapped_command(ctx: Context) -> Iterator[list[str]]:
    yield ["migrate", "-c", HERDSET, "--sql", "--url", render(ctx.postgresql()), "--", "true"]


@case(3, "--pending cannot be combined with REVISION")
def case_lint_pending_and_revisions(ctx: Context) -> Iterator[list[str]]:
    yield ["lint", "-c", HERDSET, "--pending", "a1", "--url", render(ctx.postgresql())]


@case(3, "but herd's lock and reads are on another server", "point --lock-url at the server")
def case_lock_url_on_another_server(ctx: Context) -> Iterator[list[str]]:
    # the same database name on the second PostgreSQL server: only the server differs
    url = ctx.postgresql()
    other = ctx.server("postgresql-server")
    execute(other, f"CREATE DATABASE {url.database}")
    try:
        yield ["migrate", "-c", HERDSET, "--url", render(url),
               "--lock-url", render(other.set(database=url.database, password=PASSWORD))]
    finally:
        execute(other, f"DROP DATABASE {url.database} WITH (FORCE)")


@case(14, "may not create herd's tables in schema 'public'",
      "run: grant usage, create on schema public to herd_ro_")
def case_read_only_role_migrating(ctx: Context) -> Iterator[list[str]]:
    # a role that may read everything and change nothing, as an app's runtime user is
    url = ctx.postgresql()
    role = f"herd_ro_{uuid.uuid4().hex[:8]}"
    execute(url, f"CREATE ROLE {role} LOGIN", f"GRANT pg_read_all_data TO {role}")
    try:
        yield ["migrate", "-c", HERDSET, "--url", render(url.set(username=role))]
    finally:
        execute(url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Each bad input exits with its documented code and one `herd: error:` line that hides
    the password, and leaves a PostgreSQL database exactly as it was."""
    bad = CASES[name]
    ctx = Context(request, tmp_path)
    with bad.setup(ctx) as args:
        before = snapshot(ctx.pg) if ctx.pg is not None else None
        proc = herd(args[0], "-q", *args[1:], env=ctx.env)
        after = snapshot(ctx.pg) if ctx.pg is not None else None
    output = proc.stdout + proc.stderr
    assert proc.returncode == bad.code, (proc.returncode, output)
    assert proc.stdout == "", proc.stdout
    assert len(lines(proc.stderr)) == 1, proc.stderr
    assert proc.stderr.startswith("herd: error: "), proc.stderr
    assert "Traceback" not in output
    for phrase in bad.says:
        assert phrase.lower() in proc.stderr.lower(), proc.stderr
    assert not fragments(PASSWORD, output)
    if before is not None:
        assert after == before  # nothing half-applied, nothing applied at all


def test_traceback_appears_when_asked_and_still_hides_the_password(pg: URL) -> None:
    """With --traceback a failing migration prints the Python traceback before the one error
    line, and the password stays hidden."""
    url = render(pg.set(password=PASSWORD))
    proc = herd("migrate", "-q", "--traceback", "-c", str(PROJECTS / "bad-raise" / "alembic.ini"),
                "--url", url)
    assert proc.returncode == 8, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert 'raise RuntimeError("boom: x2 fails on purpose")' in proc.stderr
    assert lines(proc.stderr)[-1].startswith("herd: error: revision x2 failed")
    assert not fragments(PASSWORD, proc.stdout + proc.stderr)


# -- the documented exit codes ----------------------------------------------------------------


def exit_code_table(path: Path) -> dict[int, tuple[str, set[str]]]:
    """code -> (meaning, exception names) from the markdown table headed
    ``| code | meaning | exception |``."""
    text = path.read_text()
    header = re.search(r"^\|\s*code\s*\|\s*meaning\s*\|\s*exception\s*\|\s*$", text,
                       re.MULTILINE | re.IGNORECASE)
    assert header is not None, f"{path} has no exit-code table"
    rows: dict[int, tuple[str, set[str]]] = {}
    for line in text[header.end():].strip().splitlines()[1:]:  # skip the |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        code = int(cells[0])
        assert code not in rows, f"{path}: code {code} twice"
        rows[code] = (cells[1], set(re.findall(r"`(\w+Error)`", cells[2])))
    return rows


HERD_ERRORS = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, HerdError) and cls is not HerdError}


@pytest.mark.parametrize("doc", ["docs/operators.md", "README.md"])
def test_documented_exit_codes_match_the_code(doc: str) -> None:
    """The exit-code table in the docs lists exactly the codes of errors.EXIT_CODES, each
    exception under its own exit code, and every HerdError subclass."""
    table = exit_code_table(ROOT / doc)
    assert list(table) == list(EXIT_CODES)
    named = set()
    for code, (_meaning, names) in table.items():
        for name in names:
            assert name in HERD_ERRORS, f"{doc}: {name} is not an alembic_herd error"
            assert HERD_ERRORS[name].exit_code == code, f"{doc}: {name} is not exit {code}"
        named |= names
    assert named == set(HERD_ERRORS), f"{doc} does not name {set(HERD_ERRORS) - named}"
    if doc == "docs/operators.md":  # the operators' page quotes the meanings verbatim
        assert {code: meaning for code, (meaning, _) in table.items()} == EXIT_CODES


def test_the_drawn_hierarchy_gives_each_error_its_exit_code() -> None:
    """The hierarchy drawn in alembic_herd.errors' docstring names every error class with the
    exit code the class carries."""
    drawn = re.findall(r"(\w+Error)\s.*\(exit (\d+)\)", errors.__doc__ or "")
    assert {name: int(code) for name, code in drawn} == {
        name: cls.exit_code for name, cls in HERD_ERRORS.items()}
