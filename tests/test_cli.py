"""The ``herd`` command line, run as a real process against real databases.

What is pinned: each verb's exit code (the table in ``errors.EXIT_CODES``), that every
error is exactly one ``herd: error: ...`` line on stderr, that a password never appears in
any output, and the machine-readable outputs (``--json``, ``--log-format json``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import URL

from alembic_herd._compat import PG_DRIVER
from alembic_herd._defaults import LEASE_TTL, REPORT_EVERY
from alembic_herd._settings import project_defaults
from alembic_herd.cli import cli
from alembic_herd.errors import EXIT_CODES
from conftest import PROJECTS, _server_url, render

CONFIG = str(PROJECTS / "herdset" / "alembic.ini")
OPERATORS = Path(__file__).parent.parent / "docs" / "operators.md"
REVISIONS = ["a1", "b2", "c3", "d4"]
PASSWORD = "s3cretpw"
UNREACHABLE = f"postgresql+{PG_DRIVER}://postgres:{PASSWORD}@127.0.0.1:1/x"
# Variables herd reads; removed so that the developer's environment cannot leak in.
HERD_VARS = ("HERD_DATABASE_URL", "DATABASE_URL", "ALEMBIC_CONFIG")


def herd(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``herd ARGS...`` as a real process."""
    child_env = {k: v for k, v in os.environ.items() if k not in HERD_VARS}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "alembic_herd.cli", *args], env=child_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The process exited ``code`` with exactly one line of output, a ``herd: error:``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    err = lines(proc.stderr)
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("herd: error: "), err[0]
    return err[0]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'herd.db'}"


def version_heads(url: str | URL) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                          .scalars())
    finally:
        engine.dispose()


# -- the verbs on a real database ---------------------------------------------------------


def test_migrate_then_check_exits_zero(pg: URL) -> None:
    """`herd migrate` on a fresh database applies every revision and prints one summary line
    on stdout; `herd check` then exits 0 with one line naming the version table and head."""
    url = render(pg)
    migrate = herd("migrate", "-c", CONFIG, "--url", url)
    assert migrate.returncode == 0, migrate.stderr
    assert lines(migrate.stdout) == [lines(migrate.stdout)[0]]
    assert migrate.stdout.startswith("migrated 4 revision(s) to d4 in ")
    assert "applying a1" in migrate.stderr  # progress is logged to stderr
    assert version_heads(pg) == ["d4"]

    check = herd("check", "-c", CONFIG, "--url", url)
    assert check.returncode == 0, check.stderr
    assert check.stdout == "current: alembic_version at d4\n"
    assert check.stderr == ""


def test_check_on_fresh_database_exits_one_with_one_line(pg: URL) -> None:
    """`herd check` on an empty database exits 1 and prints exactly one line listing the
    pending revisions."""
    check = herd("check", "-c", CONFIG, "--url", render(pg))
    assert check.returncode == 1, check.stderr
    assert check.stdout == "not current: 4 revision(s) pending (a1, b2, c3, d4)\n"
    assert check.stderr == ""


def test_status_json_lists_pending(pg: URL) -> None:
    """`herd status --json` prints one JSON object with the pending revisions, the heads and
    the lock, and changes nothing."""
    proc = herd("status", "-c", CONFIG, "--url", render(pg), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pending"] == REVISIONS
    assert data["is_current"] is False
    assert data["current_heads"] == []
    assert data["script_heads"] == ["d4"]
    assert data["version_table"] == "alembic_version"
    assert data["holder"] is None
    assert "advisory" in data["lock"]
    assert herd("check", "-c", CONFIG, "--url", render(pg)).returncode == 1


def test_status_text_names_pending_and_lock(tmp_path: Path) -> None:
    """`herd status` prints a readable summary with the pending revisions and the lock."""
    proc = herd("status", "-c", CONFIG, "--url", sqlite_url(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "pending:        4 revision(s): a1, b2, c3, d4" in proc.stdout
    assert "sqlite file" in proc.stdout


def test_history_json_after_migrate_lists_applied_rows(pg: URL) -> None:
    """After a migrate, `herd history --json` lists one applied row per revision, newest
    first, and `--limit` bounds it."""
    url = render(pg)
    assert herd("migrate", "-c", CONFIG, "--url", url).returncode == 0
    proc = herd("history", "-c", CONFIG, "--url", url, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["revision"] for r in rows] == list(reversed(REVISIONS))
    assert {r["status"] for r in rows} == {"applied"}
    assert len({r["attempt"] for r in rows}) == 1

    limited = json.loads(herd("history", "-c", CONFIG, "--url", url, "--json", "--limit",
                              "2").stdout)
    assert [r["revision"] for r in limited] == ["d4", "c3"]


def test_wait_times_out_with_exit_7(pg: URL) -> None:
    """`herd wait` never migrates: on a fresh database it gives up at --timeout with exit 7,
    one error line naming the pending revisions, and the database still empty."""
    proc = herd("wait", "-q", "-c", CONFIG, "--url", render(pg), "--timeout", "1s")
    line = assert_one_error_line(proc, 7)
    assert "4 revision(s) pending (a1, b2, c3, d4)" in line
    assert herd("check", "-c", CONFIG, "--url", render(pg)).returncode == 1


def test_wait_on_current_database_prints_summary(tmp_path: Path) -> None:
    """`herd wait` on a current database exits 0 with one summary line on stdout."""
    url = sqlite_url(tmp_path)
    assert herd("migrate", "-c", CONFIG, "--url", url).returncode == 0
    proc = herd("wait", "-c", CONFIG, "--url", url, "--timeout", "5s")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "database already current at d4\n"


def test_url_comes_from_the_environment(tmp_path: Path) -> None:
    """Without --url, herd takes the URL from HERD_DATABASE_URL before DATABASE_URL, and the
    config path from ALEMBIC_CONFIG."""
    good = sqlite_url(tmp_path)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    proc = herd("migrate", env={"HERD_DATABASE_URL": good, "DATABASE_URL": other,
                                "ALEMBIC_CONFIG": CONFIG})
    assert proc.returncode == 0, proc.stderr
    assert version_heads(good) == ["d4"]
    assert not (tmp_path / "other.db").exists()
    check = herd("check", env={"DATABASE_URL": good, "ALEMBIC_CONFIG": CONFIG})
    assert check.returncode == 0, check.stderr


# -- failures: exit code, one line, no password ---------------------------------------------


def test_wrong_password_exits_4_without_showing_it(request: pytest.FixtureRequest) -> None:
    """A URL with a wrong password gives exit 4 and one line that does not contain the
    password (MySQL/MariaDB: the local PostgreSQL servers accept any password)."""
    server = _server_url("mysql", request)
    user = f"herd_pw_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'the-right-one'"))
    try:
        url = render(server.set(username=user, password=PASSWORD))
        proc = herd("check", "-c", CONFIG, "--url", url)
        line = assert_one_error_line(proc, 4)
        assert PASSWORD not in proc.stdout + proc.stderr
        assert "password" in line  # the hint says what to check
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))
        admin.dispose()


def test_unreachable_server_exits_4_without_showing_password() -> None:
    """A server that refuses connections gives exit 4 once --lock-timeout has passed, and
    one line (with -q) that does not contain the password."""
    proc = herd("migrate", "-q", "-c", CONFIG, "--url", UNREACHABLE, "--lock-timeout", "1s")
    line = assert_one_error_line(proc, 4)
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "***" in line


def test_json_logs_mask_the_password() -> None:
    """Log lines, here the connection-retry warning in --log-format json, never contain the
    password either."""
    proc = herd("migrate", "-c", CONFIG, "--url", UNREACHABLE, "--lock-timeout", "1s",
                "--log-format", "json")
    assert proc.returncode == 4
    assert PASSWORD not in proc.stdout + proc.stderr
    events = [json.loads(line)["event"] for line in lines(proc.stderr)
              if line.startswith("{")]
    assert "connect_retry" in events


def test_unknown_database_exits_4_without_showing_password(embedded_postgres: URL) -> None:
    """A database that does not exist gives exit 4 and one line without the password."""
    url = render(embedded_postgres.set(database=f"herd_missing_{uuid.uuid4().hex[:8]}",
                                       password=PASSWORD))
    proc = herd("status", "-c", CONFIG, "--url", url)
    line = assert_one_error_line(proc, 4)
    assert "does not exist" in line
    assert PASSWORD not in proc.stdout + proc.stderr


def test_missing_config_exits_3(tmp_path: Path) -> None:
    """A missing alembic.ini gives exit 3 and one line naming -c/--config."""
    proc = herd("migrate", "-c", str(tmp_path / "nope.ini"), "--url", sqlite_url(tmp_path))
    line = assert_one_error_line(proc, 3)
    assert "--config" in line


def test_malformed_config_exits_3(tmp_path: Path) -> None:
    """An alembic.ini that is not an ini file is a configuration error (exit 3), not an
    internal one."""
    bad = tmp_path / "alembic.ini"
    bad.write_text("this is not an ini file\n")
    proc = herd("check", "-c", str(bad), "--url", sqlite_url(tmp_path))
    assert "not a valid ini file" in assert_one_error_line(proc, 3)


@pytest.mark.parametrize("args", [["migrate", "--lock-timeout", "10"],
                                  ["wait", "--timeout", "600"],
                                  ["resolve", "a1", "--lock-timeout", "30"]],
                         ids=["migrate", "wait", "resolve"])
def test_duration_without_unit_exits_3(args: list[str], tmp_path: Path) -> None:
    """A duration without a unit is refused with exit 3 and one line asking for a unit."""
    proc = herd(*args, "-c", CONFIG, "--url", sqlite_url(tmp_path))
    line = assert_one_error_line(proc, 3)
    assert "add a unit" in line
    assert not (tmp_path / "herd.db").exists()


def test_malformed_url_exits_3_without_showing_password() -> None:
    """A malformed URL gives exit 3 and one line that does not contain its password."""
    proc = herd("check", "-c", CONFIG, "--url", f"postgresql://app:{PASSWORD}@db:notaport/app")
    line = assert_one_error_line(proc, 3)
    assert "malformed" in line
    assert PASSWORD not in proc.stdout + proc.stderr


def test_advisory_lock_on_sqlite_exits_3(tmp_path: Path) -> None:
    """--lock advisory on SQLite (which has no advisory locks) gives exit 3 and names the
    backends that work."""
    proc = herd("migrate", "-c", CONFIG, "--url", sqlite_url(tmp_path), "--lock", "advisory")
    line = assert_one_error_line(proc, 3)
    assert "file" in line
    assert "table" in line


def test_dash_dash_without_command_exits_3(tmp_path: Path) -> None:
    """`herd migrate --` with nothing after it is an error (exit 3), not a plain migrate."""
    proc = herd("migrate", "-c", CONFIG, "--url", sqlite_url(tmp_path), "--")
    assert "must be followed by the migration command" in assert_one_error_line(proc, 3)
    assert not (tmp_path / "herd.db").exists()


BUGGY = """
import sys
import alembic_herd

def history(*args, **kwargs):  # a bug in herd, as an unexpected exception
    raise KeyError("no such thing")

alembic_herd.history = history
from alembic_herd.cli import main
main(sys.argv[1:])
"""


def test_internal_error_is_one_line_exit_2(tmp_path: Path) -> None:
    """An unexpected exception (a bug in herd) is one line naming its type with exit 2;
    --traceback adds the traceback."""
    url = sqlite_url(tmp_path)
    buggy = [sys.executable, "-c", BUGGY, "history", "-c", CONFIG, "--url", url]
    proc = subprocess.run(buggy, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert lines(proc.stderr) == [lines(proc.stderr)[0]]
    assert proc.stderr.startswith("herd: internal error: KeyError: ")
    assert "(run with --traceback for details)" in proc.stderr

    traced = subprocess.run([*buggy, "--traceback"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert traced.returncode == 2
    assert "Traceback (most recent call last)" in traced.stderr
    assert lines(traced.stderr)[-1].startswith("herd: internal error: KeyError: ")


def test_a_foreign_table_named_like_herds_is_a_configuration_error(tmp_path: Path) -> None:
    """A table named herd_history that is not herd's: exit 3, one line naming the table and
    how to give herd another name (it was an internal error, exit 2)."""
    url = sqlite_url(tmp_path)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE herd_history (x INTEGER)"))
    engine.dispose()
    proc = herd("history", "-c", CONFIG, "--url", url)
    assert proc.returncode == 3
    assert lines(proc.stderr) == [lines(proc.stderr)[0]]
    assert "attempt log 'herd_history' exists but cannot be read as one" in proc.stderr
    assert "--history-table" in proc.stderr
    assert herd("history", "-c", CONFIG, "--url", url, "--history-table", "herd_log"
                ).returncode == 0


# -- wrapping a migration command -----------------------------------------------------------

WRAPPED = """
import os, sys
from alembic import command
from alembic.config import Config
assert os.environ.get("HERD_LOCK_HELD") == "1", "not run under herd's lock"
config = Config(sys.argv[1])
config.set_main_option("sqlalchemy.url", sys.argv[2])
command.upgrade(config, "head")
"""


def test_wrapped_command_runs_under_the_lock(tmp_path: Path) -> None:
    """`herd migrate -- CMD` runs CMD while holding the lock (HERD_LOCK_HELD=1), the
    database ends at head, and the attempt log records each revision applied."""
    url = sqlite_url(tmp_path)
    proc = herd("migrate", "--url", url, "-c", CONFIG, "--",
                sys.executable, "-c", WRAPPED, CONFIG, url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("migrated 4 revision(s) to d4")
    assert version_heads(url) == ["d4"]
    rows = json.loads(herd("history", "-c", CONFIG, "--url", url, "--json").stdout)
    assert sorted((r["revision"], r["status"]) for r in rows) == sorted(
        (rev, "applied") for rev in [*REVISIONS, "command"])


def test_wrapped_command_failure_exits_12(tmp_path: Path) -> None:
    """A wrapped command that exits non-zero makes herd exit 12 with one error line."""
    proc = herd("migrate", "-q", "--url", sqlite_url(tmp_path), "-c", CONFIG, "--",
                sys.executable, "-c", "raise SystemExit(5)")
    assert "exited 5" in assert_one_error_line(proc, 12)


# -- logging ------------------------------------------------------------------------------


def test_json_log_format_is_one_object_per_line(tmp_path: Path) -> None:
    """--log-format json writes one JSON object per stderr line with time, level, replica,
    event, message and the event's fields; stdout keeps the summary line."""
    proc = herd("migrate", "-c", CONFIG, "--url", sqlite_url(tmp_path), "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in lines(proc.stderr)]
    assert records
    for record in records:
        assert {"time", "level", "replica", "event", "message"} <= record.keys()
    migrated = [r for r in records if r["event"] == "migrated"]
    assert len(migrated) == 1
    assert migrated[0]["revisions"] == REVISIONS
    assert lines(proc.stdout) == [lines(proc.stdout)[0]]


def test_text_log_lines_name_the_replica(tmp_path: Path) -> None:
    """Text log lines read `HH:MM:SS herd[host:pid] message`."""
    proc = herd("migrate", "-c", CONFIG, "--url", sqlite_url(tmp_path))
    assert proc.returncode == 0, proc.stderr
    first = lines(proc.stderr)[0]
    stamp, replica = first.split(" ")[:2]
    assert len(stamp) == 8
    assert stamp[2] == stamp[5] == ":"
    assert replica.startswith("herd[")
    assert replica.endswith("]")
    assert replica[5:-1].rsplit(":", 1)[1].isdigit()


# -- help and usage (in-process) --------------------------------------------------------------


def test_top_level_help_lists_every_exit_code() -> None:
    """`herd --help` contains the exit-code table and the environment variables."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4}{meaning}" in result.output
    for var in ("ALEMBIC_CONFIG", "HERD_DATABASE_URL", "DATABASE_URL"):
        assert var in result.output


@pytest.mark.parametrize("verb", ["migrate", "wait", "check", "status", "history", "resolve",
                                  "downgrade"])
def test_verb_help_names_the_environment_variables(verb: str) -> None:
    """Each verb's --help names the environment variables its options read."""
    result = CliRunner().invoke(cli, [verb, "--help"])
    assert result.exit_code == 0
    for var in ("ALEMBIC_CONFIG", "HERD_DATABASE_URL", "DATABASE_URL"):
        assert var in result.output


@pytest.mark.parametrize("args", [["migrate", "--bogus"], ["nosuchverb"],
                                  ["migrate", "extra-argument"], ["migrate", "--lock", "nope"],
                                  ["history", "--limit", "0"]],
                         ids=["unknown-option", "unknown-verb", "extra-argument", "bad-choice",
                              "bad-limit"])
def test_usage_errors_exit_3_with_one_line(args: list[str]) -> None:
    """Bad usage exits 3 (bad argument), not click's 2, with one `herd: error:` line."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert len(lines(result.stderr)) == 1
    assert result.stderr.startswith("herd: error: ")


def test_no_verb_prints_help_and_exits_3() -> None:
    """`herd` alone is a usage error (exit 3) so that a misconfigured entrypoint cannot pass
    for a successful migration."""
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 3
    assert "Commands:" in result.stderr


def test_check_gives_up_on_a_silent_server_within_its_connect_timeout() -> None:
    """A server that accepts the TCP connection and never answers (a hung host, a dead
    load balancer) must not hold 'herd check' - a readiness probe - past --connect-timeout:
    exit 4 with one line saying how long herd tried. The subprocess timeout is a safety
    net only: the default 10s per attempt would exceed it."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/x"
        proc = herd("check", "-c", CONFIG, "--url", url, "--connect-timeout", "2s",
                    timeout=9)
    line = assert_one_error_line(proc, 4)
    assert "after trying for" in line and PASSWORD not in proc.stdout + proc.stderr


# -- the options, their defaults, the docs and [tool.herd] -----------------------------------


def cli_options() -> dict[str, list[click.Option]]:
    """Every verb's options, by long name (``--lock-timeout``: one per verb that has it)."""
    found: dict[str, list[click.Option]] = {}
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option):
                long = next(opt for opt in param.opts if opt.startswith("--"))
                found.setdefault(long, []).append(param)
    return found


def envvars(param: click.Option) -> set[str]:
    names = param.envvar or []
    return {names} if isinstance(names, str) else set(names)


def test_configuration_table_matches_the_options() -> None:
    """The configuration table in docs/operators.md gives each option exactly its
    environment variables and its defaults (which come from alembic_herd._defaults), and
    lists every option that reads one."""
    text = OPERATORS.read_text()
    header = re.search(r"^\| option \| environment \| default \|$", text, re.MULTILINE)
    assert header is not None
    options = cli_options()
    documented = set()
    for line in text[header.end():].strip().splitlines()[1:]:  # skip the |---| line
        if not line.startswith("|"):
            break
        option, environment, default = (c.strip() for c in line.strip().strip("|").split("|"))
        name = re.findall(r"--[a-z-]+", option)[0]
        params = options[name]
        assert set(re.findall(r"`([A-Z_]+)`", environment)) == set().union(
            *map(envvars, params)), name
        shown = {p.default for p in params if p.show_default}
        assert shown <= set(re.findall(r"`([^`]+)`", default)), (name, shown, default)
        documented.add(name)
    assert {name for name, params in options.items() if any(map(envvars, params))} <= documented


def test_defaults_in_the_prose_match_the_code() -> None:
    """Each "`--option` (default `X`)" in docs/operators.md is that option's default, and the
    lease and waiting intervals it quotes are those of alembic_herd._defaults."""
    text = " ".join(OPERATORS.read_text().split())
    quoted = re.findall(r"`(--[a-z-]+)` \(default `([^`]+)`\)", text)
    assert len(quoted) >= 3
    options = cli_options()
    for name, value in quoted:
        assert value in {p.default for p in options[name]}, name
    for phrase in (f"renews the lease every {LEASE_TTL / 3:g} s",
                   f"until the lease expires ({LEASE_TTL:g} s)",
                   f"repeated every {REPORT_EVERY:g} s"):
        assert phrase in text


def test_tool_herd_keys_are_the_options_of_the_verbs(tmp_path: Path) -> None:
    """[tool.herd] takes option names with dashes or underscores and gives each verb only
    the keys it has an option for; [tool.herd.<verb>] overrides them for that verb."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.herd]\nlock-timeout = "1m"\nconnect_timeout = "3s"\n\n'
        '[tool.herd.resolve]\nlock-timeout = "5s"\n')
    found = project_defaults(cli.commands, tmp_path)
    assert found["migrate"] == {"lock_timeout": "1m"}
    assert found["resolve"] == {"lock_timeout": "5s"}
    assert found["check"] == {"connect_timeout": "3s"}
    assert found["wait"] == {}


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--version"], 0, "herd, version"),
    (["check", "-c", "no-such.ini"], 3, "herd: error: Alembic config 'no-such.ini' not found"),
])
def test_the_console_script_leaves_fast_but_keeps_output_code_and_atexit(
        args: list[str], code: int, needle: str) -> None:
    """main() skips the interpreter's teardown yet still flushes its output into a pipe,
    runs atexit handlers (an embedded server's cleanup) and exits with the verb's code."""
    program = ("import atexit, sys; atexit.register(lambda: print('atexit ran', flush=True)); "
               "from alembic_herd.cli import main; main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True,
                            text=True, check=False)
    assert result.returncode == code, result.stderr
    assert needle in result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("atexit ran")


# -- Alembic's habits ---------------------------------------------------------------------------

NEWCOMER = str(PROJECTS / "newcomer" / "alembic.ini")
SRC = Path(__file__).parent.parent / "src" / "alembic_herd"


def sqlite_tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_positional_target_works_as_in_alembic(tmp_path: Path) -> None:
    """`herd migrate b2` migrates to b2 like `alembic upgrade b2`; `herd check b2` is then
    current, `herd check` (head) is not, and REVISION with an equal --target is accepted."""
    url = sqlite_url(tmp_path)
    proc = herd("migrate", "-c", CONFIG, "b2", "--url", url)
    assert proc.returncode == 0, proc.stderr
    assert version_heads(url) == ["b2"]
    assert herd("check", "-c", CONFIG, "b2", "--target", "b2", "--url", url).returncode == 0
    assert herd("check", "-c", CONFIG, "--url", url).returncode == 1
    assert herd("wait", "-c", CONFIG, "b2", "--timeout", "1s", "--url", url).returncode == 0


def test_x_name_and_script_location_reach_env_py(tmp_path: Path) -> None:
    """-x key=value reaches env.py's context.get_x_argument(), -n picks the config's section
    and -d replaces script_location, as with Alembic; herd watches the version table env.py
    then writes (x_arguments= in the library)."""
    import alembic_herd

    with_x = sqlite_url(tmp_path / "x")
    (tmp_path / "x").mkdir()
    proc = herd("migrate", "-c", NEWCOMER, "-x", "version_table=xv", "--url", with_x)
    assert proc.returncode == 0, proc.stderr
    check = herd("check", "-c", NEWCOMER, "-x", "version_table=xv", "--url", with_x)
    assert check.stdout == "current: xv at n1\n", check.stderr
    assert {"xv", "notes"} <= sqlite_tables(with_x)

    section = f"sqlite:///{tmp_path / 'n.db'}"
    assert herd("migrate", "-c", NEWCOMER, "-n", "tenant", "--url", section).returncode == 0
    assert "tenant_version" in sqlite_tables(section)

    moved = f"sqlite:///{tmp_path / 'd.db'}"
    proc = herd("migrate", "-c", CONFIG, "-d", str(PROJECTS / "newcomer" / "migrations"),
                "--url", moved)
    assert proc.stdout.startswith("migrated 1 revision(s) to n1"), proc.stderr
    assert version_heads(moved) == ["n1"]

    library = f"sqlite:///{tmp_path / 'lib.db'}"
    outcome = alembic_herd.upgrade(NEWCOMER, url=library, x_arguments={"version_table": "lv"})
    assert outcome.action == "migrated"
    assert "lv" in sqlite_tables(library)


def test_sql_prints_the_upgrade_without_touching_a_database(tmp_path: Path) -> None:
    """`herd migrate --sql` prints Alembic's offline SQL like `alembic upgrade --sql`: it
    needs no reachable server, creates no database file and takes no lock."""
    offline = herd("migrate", "-c", CONFIG, "--sql", "--url", UNREACHABLE)
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TABLE accounts" in offline.stdout
    assert "INSERT INTO alembic_version (version_num) VALUES ('a1')" in offline.stdout
    assert PASSWORD not in offline.stdout + offline.stderr
    sqlite = herd("migrate", "-c", CONFIG, "c3", "--sql", "--url", sqlite_url(tmp_path))
    assert sqlite.returncode == 0, sqlite.stderr
    assert "UPDATE alembic_version SET version_num='c3'" in sqlite.stdout
    assert list(tmp_path.iterdir()) == []  # no database file, no lock file


def test_quiet_also_silences_alembics_info_lines(tmp_path: Path) -> None:
    """env.py's fileConfig() turns Alembic's INFO lines on; -q silences them with herd's own,
    leaving only the result line."""
    loud = herd("migrate", "-c", NEWCOMER, "--url", f"sqlite:///{tmp_path / 'a.db'}")
    assert "Running upgrade  -> n1" in loud.stderr, loud.stderr
    quiet = herd("migrate", "-q", "-c", NEWCOMER, "--url", f"sqlite:///{tmp_path / 'b.db'}")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("migrated 1 revision(s) to n1")


FOREIGN_FLAGS = {
    "--auth-host": "initdb's (_embedded.py)", "--auth-local": "initdb's",
    "--encoding": "initdb's", "--no-sync": "initdb's",
    "--purge": "alembic stamp's",
    "--events": "the demo's replica program (demo/replica.py)", "--lease-ttl": "the same",
}
"""Flags that herd's source names but that belong to another program."""


def test_every_flag_a_message_names_exists() -> None:
    """Every --flag named in a string literal of herd's source is an option of the herd
    command line (or belongs, listed, to another program): a hint never names a flag that
    does not exist."""
    import ast

    named: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", node.value):
                    named.setdefault(flag, str(path.relative_to(SRC)))
    options = {opt for command in cli.commands.values() for param in command.params
               for opt in param.opts if opt.startswith("--")} | {"--help", "--version"}
    unknown = {flag: where for flag, where in named.items()
               if flag not in options and flag not in FOREIGN_FLAGS}
    assert unknown == {}
    assert set(FOREIGN_FLAGS) <= set(named)  # the list holds no stale entry
    assert {"--version-table", "--version-table-schema", "--lock-url"} <= set(named)


# -- what a waiter and status report ------------------------------------------------------


def test_a_waiter_reports_a_failed_attempt_from_before_its_start(pg: URL) -> None:
    """A `herd wait` started after a migration failed, while nobody holds the lock, exits 9
    at once with that failure instead of waiting out its timeout; while a replica holds the
    lock (a retry) it waits, and after 'herd resolve' it waits for a new attempt."""
    from alembic_herd.locks import LockKey

    failing = str(PROJECTS / "bad-raise" / "alembic.ini")
    url = render(pg)
    assert herd("migrate", "-q", "-c", failing, "--url", url).returncode == 8
    reported = herd("wait", "-q", "-c", failing, "--url", url, "--timeout", "10m", timeout=60)
    line = assert_one_error_line(reported, 9)
    assert "failed on revision x2" in line and "boom: x2 fails on purpose" in line

    key = LockKey.for_version_table("alembic_version", None, None).as_int64()
    engine = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as holder:  # a replica retrying: the waiter waits for it
            assert holder.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            retried = herd("wait", "-q", "-c", failing, "--url", url, "--timeout", "2s")
    finally:
        engine.dispose()
    assert "is a replica migrating?" in assert_one_error_line(retried, 7)

    assert herd("resolve", "-q", "-c", failing, "x2", "--url", url).returncode == 0
    after = herd("wait", "-q", "-c", failing, "--url", url, "--timeout", "1s")
    assert_one_error_line(after, 7)


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_status_names_only_the_holder_of_this_databases_lock(
        server: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two databases on one server: `herd status` on one does not name the holder of the
    other's lock (MySQL's GET_LOCK names are server-wide: herd's key includes the
    database), and does name its own."""
    from alembic_herd.locks import LockKey
    from alembic_herd.locks.mysql import lock_name
    from conftest import make_database

    makers = [make_database(server, request, tmp_path) for _ in range(2)]
    mine, other = (next(maker) for maker in makers)
    engine = sa.create_engine(other, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as holder:
            if server == "mysql":
                key = LockKey.for_version_table("alembic_version", None, other.database)
                taken = holder.scalar(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": lock_name(key)})
            else:
                key = LockKey.for_version_table("alembic_version", None, None)
                taken = holder.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                      {"k": key.as_int64()})
            assert taken
            looks = {url.database: json.loads(herd("status", "-c", CONFIG, "--json", "--url",
                                                   render(url)).stdout)["holder"]
                     for url in (mine, other)}
    finally:
        engine.dispose()
        for maker in makers:
            next(maker, None)
    assert looks[mine.database] is None
    assert looks[other.database] is not None


def test_cli_py_stays_a_thin_list_of_verbs() -> None:
    """cli.py holds the verbs only (options, configuration, output and exits live in their
    own modules): it stays under 300 lines."""
    import alembic_herd.cli as module

    assert len(Path(module.__file__).read_text().splitlines()) < 300
