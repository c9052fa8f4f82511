"""``herd`` in production: the container entrypoint (``herd run``), ``herd unlock``, the
configuration precedence, ``--allow-ahead`` and the logs, with real processes against
real databases.

``herd run -- CMD`` must *become* CMD (same pid, CMD's signals, CMD's exit code, CMD's
stdout), ``--mode wait`` must never migrate, and a herd of ``herd run`` replicas started
together must migrate exactly once.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from conftest import PROJECTS, _server_url, make_database, render

HERDSET = str(PROJECTS / "herdset" / "alembic.ini")
REVISIONS = ["a1", "b2", "c3", "d4"]
PASSWORD = "hunter2pw"
HOST = socket.gethostname()
HERD = [sys.executable, "-m", "alembic_herd.cli"]
_SCRIPT = Path(sys.executable).with_name("herd")
HERD_BINARY = [str(_SCRIPT)] if _SCRIPT.is_file() else HERD  # the console script

# Commands herd run starts (CMD): print their pid / wait for SIGTERM / hold until stdin closes.
PRINT_PID_EXIT_7 = "import os, sys; print('app pid', os.getpid(), flush=True); sys.exit(7)"
PRINT_PID = "import os; print('app pid', os.getpid(), flush=True)"
ON_SIGTERM = """
import signal, sys, time
def stop(signum, frame):
    print('app got SIGTERM', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print('app ready', flush=True)
while True:
    time.sleep(1)
"""
HOLD = "import sys; print('holding', flush=True); sys.stdin.readline()"
# Waits on stdin (the barrier), then becomes herd.
BECOME_HERD = ("import os, sys; print('ready', flush=True); sys.stdin.readline(); "
               "os.execv(sys.argv[1], sys.argv[1:])")


def herd_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the caller's HERD_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
           and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    env.update(extra or {})
    return env


def herd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``herd ARGS...`` as a real process and wait for it."""
    return subprocess.run([*HERD, *args], env=herd_env(env), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def app(code: str) -> list[str]:
    """The command line of a tiny application for ``herd run -- ...``."""
    return [sys.executable, "-c", code]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """``proc`` exited ``code``; its last stderr line is the one ``herd: error:`` line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in lines(proc.stderr) if line.startswith("herd: error: ")]
    assert len(errors) == 1, proc.stderr
    assert lines(proc.stderr)[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    return errors[0]


def version_heads(url: URL | str) -> list[str] | None:
    """The version table's rows, ``None`` when it does not exist."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                          .scalars())
    finally:
        engine.dispose()


def stamp(url: URL, revision: str) -> None:
    """Put the database at ``revision`` (one these scripts do not know)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
    engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- processes that outlive one call -----------------------------------------------------------


class Lines:
    """Reads a pipe on a thread, so that a test can wait for a line with a bound."""

    def __init__(self, pipe: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._closed = False
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line)
        self._queue.put(None)

    def _next(self, deadline: float) -> str | None:
        try:
            line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no more output within the bound; so far: {self.seen}") from None
        if line is None:
            self._closed = True
        else:
            self.seen.append(line)
        return line

    def wait_for(self, text: str, bound: float = 60) -> str:
        """The first (next) line containing ``text``."""
        deadline = time.monotonic() + bound
        while not self._closed:
            line = self._next(deadline)
            if line is not None and text in line:
                return line
        raise AssertionError(f"output ended without {text!r}: {''.join(self.seen)}")

    def text(self, bound: float = 60) -> str:
        """Everything, once the pipe is closed."""
        deadline = time.monotonic() + bound
        while not self._closed:
            self._next(deadline)
        return "".join(self.seen)


@dataclass
class Running:
    proc: subprocess.Popen[str]
    out: Lines
    err: Lines

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, bound: float = 120) -> subprocess.CompletedProcess[str]:
        code = self.proc.wait(timeout=bound)
        return subprocess.CompletedProcess(self.proc.args, code, self.out.text(),
                                           self.err.text())


Spawn = Callable[..., Running]  # the spawn fixture: (argv, env=None) -> Running


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``argv`` with piped stdin/stdout/stderr; whatever still runs at the end of the
    test is killed (by the pid this fixture started)."""
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Running:
        proc = subprocess.Popen(argv, env=herd_env(env), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stderr is not None
        return Running(proc, Lines(proc.stdout), Lines(proc.stderr))

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        with suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


# -- herd run: becoming the application -------------------------------------------------------


def test_run_migrates_then_becomes_the_command(pg: URL, spawn: Spawn) -> None:
    """`herd run -- CMD` on a fresh database migrates, then replaces itself with CMD: the
    same pid, CMD's exit code, and CMD's stdout alone (herd logs to stderr)."""
    running = spawn([*HERD, "run", "-c", HERDSET, "--url", render(pg), "--",
                     *app(PRINT_PID_EXIT_7)])
    proc = running.finish()
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == f"app pid {running.pid}\n"
    assert set(re.findall(r"herd\[[^\]\s]+:(\d+)\]", proc.stderr)) == {str(running.pid)}
    assert "migrated 4 revision(s) to d4" in proc.stderr
    assert version_heads(pg) == ["d4"]


def test_signals_after_exec_reach_the_command(pg: URL, spawn: Spawn) -> None:
    """A SIGTERM sent to the process once herd has started CMD is handled by CMD (which
    exits 0), not by herd: the process is CMD's."""
    running = spawn([*HERD, "run", "-c", HERDSET, "--url", render(pg), "--", *app(ON_SIGTERM)])
    running.out.wait_for("app ready")
    running.proc.send_signal(signal.SIGTERM)
    proc = running.finish()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "app ready\napp got SIGTERM\n"


def test_mode_wait_never_migrates_and_starts_the_command_once_current(
        pg: URL, tmp_path: Path) -> None:
    """`herd run --mode wait` on a fresh database times out with exit 7 without migrating or
    starting CMD; once another replica has migrated, it starts CMD."""
    marker = tmp_path / "started"
    command = app(f"open({str(marker)!r}, 'w').close(); print('app started')")
    url = render(pg)
    proc = herd("run", "--mode", "wait", "--timeout", "2s", "-c", HERDSET, "--url", url, "--",
                *command)
    assert "not at head after 2.00 s" in error_line(proc, 7)
    assert proc.stdout == ""
    assert not marker.exists()
    assert version_heads(pg) is None

    assert herd("migrate", "-c", HERDSET, "--url", url).returncode == 0
    proc = herd("run", "--mode", "wait", "--timeout", "2s", "-c", HERDSET, "--url", url, "--",
                *command)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "app started\n"
    assert marker.exists()


@pytest.mark.herd
def test_a_herd_of_run_entrypoints_migrates_once_and_every_one_starts(
        pg: URL, spawn: Spawn) -> None:
    """Eight `herd run` processes released at the same moment all start their command, and
    exactly one of them migrated: each revision is applied once, the data row exists once."""
    url = render(pg)
    argv = [sys.executable, "-c", BECOME_HERD, *HERD_BINARY, "run", "--log-format", "json",
            "-c", HERDSET, "--url", url, "--", *app(PRINT_PID)]
    herd_of = [spawn(argv) for _ in range(8)]
    for replica in herd_of:
        replica.out.wait_for("ready")
    for replica in herd_of:  # the barrier opens
        assert replica.proc.stdin is not None
        replica.proc.stdin.write("go\n")
        replica.proc.stdin.flush()
    results = [(replica.pid, replica.finish()) for replica in herd_of]

    migrated = 0
    for pid, proc in results:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"ready\napp pid {pid}\n"
        events = [json.loads(line)["event"] for line in lines(proc.stderr)]
        assert events[-1] == "exec"
        migrated += events.count("migrated")
    assert migrated == 1

    rows = json.loads(herd("history", "-c", HERDSET, "--url", url, "--json").stdout)
    assert Counter((r["revision"], r["status"]) for r in rows) == {
        (rev, "applied"): 1 for rev in REVISIONS}
    engine = sa.create_engine(pg)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM settings WHERE name = 'seeded'")) == 1
    engine.dispose()


class Proxy:
    """A loopback TCP forwarder from ``port`` to ``upstream``: the database "comes up"."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_waits_for_the_database_to_accept_connections(
        request: pytest.FixtureRequest, tmp_path: Path, spawn: Spawn) -> None:
    """`herd run` started before its database accepts connections logs that it is waiting,
    then, once the server is reachable, migrates and starts the command."""
    server = _server_url("postgresql-server", request)  # a TCP server (CI sets it)
    with contextmanager(make_database)("postgresql-server", request, tmp_path) as db:
        port = free_port()
        password = db.password or PASSWORD  # a trusting server ignores it
        url = render(db.set(host="127.0.0.1", port=port, password=password))
        running = spawn([*HERD, "run", "-c", HERDSET, "--url", url, "--lock-timeout", "2m",
                         "--", *app(PRINT_PID)])
        running.err.wait_for("waiting for database")
        proxy = Proxy(port, (server.host or "127.0.0.1", server.port or 5432))
        try:
            proc = running.finish()
        finally:
            proxy.close()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"app pid {running.pid}\n"
        assert "migrated 4 revision(s) to d4" in proc.stderr
        assert str(password) not in proc.stdout + proc.stderr
        assert version_heads(db) == ["d4"]


def test_json_logs_of_run_name_the_replica_and_the_event(tmp_path: Path, spawn: Spawn) -> None:
    """`herd run --log-format json` writes one JSON object per stderr line, each naming this
    replica (host:pid, the pid CMD then has) and the event, ending with the exec."""
    running = spawn([*HERD, "run", "--log-format", "json", "-c", HERDSET, "--url",
                     sqlite_url(tmp_path / "app.db"), "--", *app(PRINT_PID)])
    proc = running.finish()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"app pid {running.pid}\n"
    records = [json.loads(line) for line in lines(proc.stderr)]
    assert {r["replica"] for r in records} == {f"{HOST}:{running.pid}"}
    events = [r["event"] for r in records]
    assert "migrated" in events
    assert events[-1] == "exec"
    assert records[-1]["command"] == sys.executable


# -- herd unlock --------------------------------------------------------------------------------


def hold_lock(spawn: Spawn, url: str, *lock: str) -> Running:
    """A live herd that holds the migration lock: `herd migrate -- CMD` with a CMD that waits
    until its stdin closes."""
    holder = spawn([*HERD, "migrate", "-c", HERDSET, "--url", url, *lock, "--", *app(HOLD)])
    holder.out.wait_for("holding")
    return holder


def test_unlock_breaks_a_lease_whose_holder_died(pg: URL, spawn: Spawn) -> None:
    """`herd unlock --lock table` breaks a lease left by a killed process on this host (no
    waiting for its expiry), after which the lock is free and a migrate succeeds."""
    url = render(pg)
    holder = hold_lock(spawn, url, "--lock", "table")
    holder.proc.kill()
    holder.proc.wait(timeout=30)
    assert holder.proc.stdin is not None
    holder.proc.stdin.close()  # ends the orphaned CMD

    proc = herd("unlock", "-c", HERDSET, "--url", url, "--lock", "table")
    assert proc.returncode == 0, proc.stderr
    assert f"held by pid {holder.pid} on host {HOST}" in proc.stdout
    assert "(its process is gone)" in proc.stdout
    status = json.loads(herd("status", "-c", HERDSET, "--url", url, "--lock", "table",
                             "--json").stdout)
    assert status["holder"] is None
    assert herd("migrate", "-c", HERDSET, "--url", url, "--lock", "table").returncode == 0
    assert version_heads(pg) == ["d4"]


def test_unlock_refuses_a_live_lease_holder_unless_forced(pg: URL, spawn: Spawn) -> None:
    """`herd unlock --lock table` refuses (exit 6) while the lease's holder is alive, naming
    its host and pid; `--force` breaks the lease."""
    url = render(pg)
    holder = hold_lock(spawn, url, "--lock", "table")

    refused = herd("unlock", "-c", HERDSET, "--url", url, "--lock", "table")
    line = error_line(refused, 6)
    assert f"pid {holder.pid} on host {HOST}" in line
    assert "--force" in line

    forced = herd("unlock", "-c", HERDSET, "--url", url, "--lock", "table", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"held by pid {holder.pid} on host {HOST}" in forced.stdout
    assert forced.stdout.rstrip().endswith("(--force)")
    status = json.loads(herd("status", "-c", HERDSET, "--url", url, "--lock", "table",
                             "--json").stdout)
    assert status["holder"] is None


def test_unlock_refuses_a_held_advisory_lock_naming_the_holder(pg: URL, spawn: Spawn) -> None:
    """With PostgreSQL's advisory lock held by a live herd, `herd unlock` refuses with exit 6
    naming the holder's pid and host, with or without --force (a session lock is never
    stale)."""
    url = render(pg)
    holder = hold_lock(spawn, url)
    for force in ([], ["--force"]):
        line = error_line(herd("unlock", "-c", HERDSET, "--url", url, *force), 6)
        assert f"pid {holder.pid} on host {HOST}" in line
        assert "session lock" in line


# -- configuration precedence -------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An application folder with a pyproject.toml whose [tool.herd] points at a copy of the
    herdset project by a relative path; returns a sub-folder to run herd from."""
    root = tmp_path / "app"
    shutil.copytree(PROJECTS / "herdset", root / "db")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n'
        '[tool.herd]\nconfig = "db/alembic.ini"\ntimeout = "500ms"\n\n'
        '[tool.herd.run]\nmode = "wait"\n')
    (root / "src").mkdir()
    return root / "src"


def test_command_line_beats_environment_beats_pyproject_beats_default(
        project: Path, tmp_path: Path) -> None:
    """[tool.herd] overrides the defaults (config relative to the pyproject, timeout, and
    [tool.herd.run] mode), HERD_* variables override [tool.herd], and options override
    both."""
    def run(db: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return herd("run", "--url", sqlite_url(tmp_path / db), *args, "--",
                    *app("print('app started')"), env=env, cwd=project)

    # [tool.herd]: wait mode (default auto), 500ms (default 10m), its config (no -c given)
    assert "not at head after 0.50 s" in error_line(run("one.db"), 7)
    # the environment beats [tool.herd] ...
    assert "after 1.00 s" in error_line(run("one.db", HERD_TIMEOUT="1s"), 7)
    # ... and the command line beats the environment
    assert "after 0.75 s" in error_line(run("one.db", "--timeout", "750ms", HERD_TIMEOUT="1s"),
                                        7)
    migrated = run("two.db", HERD_MODE="auto")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == "app started\n"
    assert version_heads(sqlite_url(tmp_path / "two.db")) == ["d4"]
    waited = run("three.db", "--mode", "wait", HERD_MODE="auto")
    assert "not at head" in error_line(waited, 7)
    assert version_heads(sqlite_url(tmp_path / "three.db")) is None
    # the config path: ALEMBIC_CONFIG beats [tool.herd], -c beats ALEMBIC_CONFIG
    from_env = herd("check", "--url", sqlite_url(tmp_path / "two.db"), cwd=project,
                    env={"ALEMBIC_CONFIG": str(tmp_path / "env.ini")})
    assert "env.ini" in error_line(from_env, 3)
    from_option = herd("check", "--url", sqlite_url(tmp_path / "two.db"), "-c",
                       str(tmp_path / "option.ini"), cwd=project,
                       env={"ALEMBIC_CONFIG": str(tmp_path / "env.ini")})
    assert "option.ini" in error_line(from_option, 3)


@pytest.mark.parametrize(("table", "says"), [
    ('[tool.herd]\nlock-timout = "1s"\n', "unknown key 'lock-timout'"),
    ('[tool.herd.migrat]\nlock = "table"\n', "[tool.herd.migrat]"),
], ids=["unknown-key", "unknown-verb"])
def test_unknown_pyproject_key_exits_3_naming_it(tmp_path: Path, table: str, says: str) -> None:
    """A misspelt key or verb table in [tool.herd] is refused with exit 3 and one line
    naming it, instead of being silently ignored."""
    (tmp_path / "pyproject.toml").write_text(table)
    proc = herd("check", "-c", HERDSET, "--url", sqlite_url(tmp_path / "x.db"), cwd=tmp_path)
    assert says in error_line(proc, 3)
    assert lines(proc.stderr) == [lines(proc.stderr)[-1]]


# -- rolling deploys: --allow-ahead ---------------------------------------------------------------


def test_allow_ahead_treats_a_newer_database_as_current(pg: URL, tmp_path: Path) -> None:
    """A database at a revision this code does not know makes check, migrate and run exit 5
    (run without starting CMD); with --allow-ahead (or HERD_ALLOW_AHEAD) they exit 0, run
    starts CMD, and the database is left as it was."""
    stamp(pg, "zz99")
    url = render(pg)
    marker = tmp_path / "started"
    command = app(f"open({str(marker)!r}, 'w').close(); print('app started')")

    for verb, extra in (("check", []), ("migrate", []), ("run", ["--", *command])):
        refused = herd(verb, "-c", HERDSET, "--url", url, *extra)
        assert "zz99" in error_line(refused, 5), verb
        assert not marker.exists()
    check = herd("check", "-c", HERDSET, "--url", url, "--allow-ahead")
    assert check.returncode == 0, check.stderr
    assert check.stdout == "current (ahead of this code): alembic_version at zz99, unknown zz99\n"
    migrate = herd("migrate", "-c", HERDSET, "--url", url, "--allow-ahead")
    assert migrate.returncode == 0, migrate.stderr
    for allow in (["--allow-ahead"], []):
        marker.unlink(missing_ok=True)
        run = herd("run", "-c", HERDSET, "--url", url, *allow, "--", *command,
                   env={} if allow else {"HERD_ALLOW_AHEAD": "1"})
        assert run.returncode == 0, run.stderr
        assert run.stdout == "app started\n"
        assert marker.exists()
    assert version_heads(pg) == ["zz99"]


# -- herd run --migrate-command, and what a wrapped command leaves in the attempt log -------

# A project's own migration command: upgrades to argv[3] with Alembic's API; with a marker
# folder argv[4], says 'started' there, waits for 'go', then fails the way a migration does
# (a traceback on stderr naming a URL with a password) and exits 3.
OWN_COMMAND = """
import pathlib, sys, time
from alembic import command
from alembic.config import Config
cfg = Config(sys.argv[1])
cfg.set_main_option("sqlalchemy.url", sys.argv[2].replace("%", "%%"))
command.upgrade(cfg, sys.argv[3])
if len(sys.argv) > 4:
    marks = pathlib.Path(sys.argv[4])
    (marks / "started").touch()
    while not (marks / "go").exists():
        time.sleep(0.05)
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "migrations/versions/c3_seed.py", line 9, in upgrade', file=sys.stderr)
    print("RuntimeError: c3 could not reach postgresql://app:S3cretPw@db.internal/app",
          file=sys.stderr)
    sys.exit(3)
"""
SECRET = "S3cretPw"
STDERR_ERROR = "RuntimeError: c3 could not reach postgresql://app:***@db.internal/app"


def own_command(url: str, target: str, *marks: Path) -> list[str]:
    return [sys.executable, "-c", OWN_COMMAND, HERDSET, url, target, *map(str, marks)]


def attempt_log(url: str) -> list[dict[str, object]]:
    rows = json.loads(herd("history", "-c", HERDSET, "--url", url, "--json").stdout)
    return list(reversed(rows))  # oldest first


@pytest.mark.parametrize("backend", ["postgresql-server", "mysql"])
def test_a_failed_wrapped_command_is_recorded_as_it_happened(
        backend: str, db: URL, tmp_path: Path, spawn: Spawn) -> None:
    """`herd run --migrate-command CMD` where CMD applies a1, b2 and then fails: herd exits 12
    naming CMD's error and does not start the app; the attempt log has one row for the
    command (masked, exit code, stderr tail, its whole duration), a1 and b2 'applied'
    without a duration, and no row for c3, d4 (on MariaDB, whose DDL is not transactional,
    c3 'failed' as possibly partly applied, d4 nothing). A waiter that was waiting, and one
    started afterwards, both print CMD's error; the next leader goes on (PostgreSQL) or
    stops on c3 until 'herd resolve c3' (MariaDB)."""
    url = render(db)
    marks = tmp_path / "marks"
    marks.mkdir()
    words = shlex.join(own_command(url, "b2", marks))
    leader = spawn([*HERD, "run", "-c", HERDSET, "--url", url, "--migrate-command", words,
                    "--", *app(PRINT_PID)])
    deadline = time.monotonic() + 120
    while not (marks / "started").exists():
        assert leader.proc.poll() is None, leader.err.text()
        assert time.monotonic() < deadline, "the migration command never started"
        time.sleep(0.05)
    waiter = spawn([*HERD, "wait", "-c", HERDSET, "--url", url, "--timeout", "2m"])
    waiter.err.wait_for("waiting for the database")
    (marks / "go").touch()
    led = leader.finish()
    assert "app pid" not in led.stdout  # the app is not started after a failed migration
    assert led.returncode == 12, led.stderr  # CMD's own traceback passes through, then:
    line = lines(led.stderr)[-1]
    assert line.startswith("herd: error: ") and SECRET not in led.stderr.split(STDERR_ERROR)[-1]
    assert "exited 3" in line and STDERR_ERROR in line and SECRET not in line, line
    assert "applied a1, b2" in line and "not reached: c3, d4" in line
    for late in (waiter.finish(), herd("wait", "-c", HERDSET, "--url", url, "--timeout", "2m")):
        told = error_line(late, 9)
        assert STDERR_ERROR in told and "exited 3" in told and SECRET not in told, told

    rows = attempt_log(url)
    assert SECRET not in json.dumps(rows)
    command_row, *revisions = rows
    assert command_row["revision"] == "command" and command_row["status"] == "failed"
    text = str(command_row["error"])
    assert text.startswith(f"$ {sys.executable} -c ")
    assert "stderr, last 3 line(s):" in text and f"  {STDERR_ERROR}" in text
    assert text.splitlines()[-1].startswith("exited 3 after ")
    assert isinstance(command_row["duration"], float)
    assert {r["attempt"] for r in revisions} == {command_row["attempt"]}
    assert [(r["revision"], r["status"], r["duration"]) for r in revisions[:2]] == [
        ("a1", "applied", None), ("b2", "applied", None)]
    transactional = backend != "mysql"
    assert [(r["revision"], r["status"]) for r in revisions[2:]] == (
        [] if transactional else [("c3", "failed")])
    assert version_heads(db) == ["b2"]

    nxt = herd("migrate", "-c", HERDSET, "--url", url)
    if not transactional:
        assert "herd resolve c3" in error_line(nxt, 10)
        resolved = herd("resolve", "c3", "-c", HERDSET, "--url", url)
        assert resolved.returncode == 0, resolved.stderr
        nxt = herd("migrate", "-c", HERDSET, "--url", url)
    assert nxt.returncode == 0, nxt.stderr
    assert nxt.stdout.startswith("migrated 2 revision(s) to d4")


def test_run_takes_the_migrate_command_from_pyproject(pg: URL, tmp_path: Path) -> None:
    """[tool.herd] migrate-command (a string, split like a shell): `herd run` runs it under
    the lock, then starts the app. The attempt log has the command's row ('exited 0', its
    duration) and one 'applied' row per revision it applied, without a duration."""
    url = render(pg)
    words = shlex.join(own_command(url, "head"))
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.herd]\nconfig = "{HERDSET}"\nmigrate-command = """{words}"""\n')
    ran = herd("run", "--url", url, "--", *app("print('app started')"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "app started\n"
    assert "migrated 4 revision(s) to d4" in ran.stderr
    command_row, *revisions = attempt_log(url)
    assert (command_row["revision"], command_row["status"]) == ("command", "applied")
    assert str(command_row["error"]).splitlines()[-1].startswith("exited 0 after ")
    assert "applied a1, b2, c3, d4" in str(command_row["error"])
    assert [(r["revision"], r["status"], r["duration"]) for r in revisions] == [
        (rev, "applied", None) for rev in REVISIONS]
    # --mode wait never runs it (workers share the [tool.herd] table)
    waited = herd("run", "--url", url, "--mode", "wait", "--", *app("print('worker')"),
                  cwd=tmp_path)
    assert waited.returncode == 0 and waited.stdout == "worker\n", waited.stderr


def test_sigterm_stops_the_migrate_command_of_run_before_the_lock_goes(
        pg: URL, tmp_path: Path, spawn: Spawn) -> None:
    """SIGTERM to `herd run --migrate-command CMD` while CMD runs: CMD's process group gets
    it, herd exits 143 only once CMD is gone, the app is not started, the command's row is
    'interrupted' and the lock is free (the next run migrates)."""
    url = render(pg)
    marks = tmp_path / "marks"
    marks.mkdir()
    words = shlex.join(own_command(url, "b2", marks))
    leader = spawn([*HERD, "run", "-c", HERDSET, "--url", url, "--migrate-command", words,
                    "--", *app(PRINT_PID)])
    deadline = time.monotonic() + 120
    while not (marks / "started").exists():
        assert leader.proc.poll() is None, leader.err.text()
        assert time.monotonic() < deadline, "the migration command never started"
        time.sleep(0.05)
    leader.proc.send_signal(signal.SIGTERM)
    done = leader.finish()
    assert done.returncode == 143, done.stderr
    assert "app pid" not in done.stdout
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(marks) not in ps.stdout, "the migration command outlived herd"
    rows = attempt_log(url)
    assert [(r["revision"], r["status"]) for r in rows] == [
        ("command", "interrupted"), ("a1", "applied"), ("b2", "applied")]
    assert str(rows[0]["error"]).splitlines()[-1].startswith("stopped by SIGTERM")
    nxt = herd("run", "-c", HERDSET, "--url", url, "--", *app("print('app started')"))
    assert nxt.returncode == 0 and nxt.stdout == "app started\n", nxt.stderr


@pytest.mark.parametrize("backend", ["postgresql-server", "mysql"])
def test_a_leader_killed_while_its_command_runs(
        backend: str, db: URL, tmp_path: Path, spawn: Spawn) -> None:
    """SIGKILL to the leader while its migration command runs: the command dies with it
    (parent-death signal). The next leader marks the command's row 'interrupted' and carries
    on (PostgreSQL), or, where DDL is not transactional (MariaDB), stops (exit 10) until
    'herd resolve command'. (A deploy after the first: on an empty database herd's tables
    appear only after the command exits, so a kill before then leaves no row of herd's.)"""
    url = render(db)
    first = herd("migrate", "-c", HERDSET, "--url", url, "a1")
    assert first.returncode == 0, first.stderr
    marks = tmp_path / "marks"
    marks.mkdir()
    leader = spawn([*HERD, "migrate", "-c", HERDSET, "--url", url, "--",
                    *own_command(url, "b2", marks)])
    deadline = time.monotonic() + 120
    while not (marks / "started").exists():
        assert leader.proc.poll() is None, leader.err.text()
        assert time.monotonic() < deadline, "the migration command never started"
        time.sleep(0.05)
    leader.proc.kill()
    leader.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while str(marks) in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                       check=True).stdout:
        assert time.monotonic() < deadline, "the migration command outlived its herd"
        time.sleep(0.1)
    nxt = herd("migrate", "-c", HERDSET, "--url", url)
    if backend == "mysql":
        assert "herd resolve command" in error_line(nxt, 10)
        resolved = herd("resolve", "command", "-c", HERDSET, "--url", url)
        assert resolved.returncode == 0, resolved.stderr
        nxt = herd("migrate", "-c", HERDSET, "--url", url)
    assert nxt.returncode == 0, nxt.stderr
    assert nxt.stdout.startswith("migrated 2 revision(s) to d4")
    command = [row for row in attempt_log(url) if row["revision"] == "command"]
    assert [row["status"] for row in command] == [
        "resolved" if backend == "mysql" else "interrupted"]


def test_the_command_row_names_the_error_line_masked_and_bounded() -> None:
    """The command row's last line picks the exception line of a SQLAlchemy traceback (not
    [SQL: ...] or the Background link), masks URLs, says nothing of a success's stderr, and
    keeps the text bounded by dropping the oldest stderr lines."""
    from alembic_herd._command import Report, headline

    tail = ["Traceback (most recent call last):", '  File "env.py", line 3, in <module>',
            "    op.add_column('t', c)",
            'sqlalchemy.exc.OperationalError: (1060, "Duplicate column name \'x\'") '
            "at mysql://root:Pa55word@db/app",
            "[SQL: ALTER TABLE t ADD COLUMN x INTEGER]",
            "(Background on this error at: https://sqlalche.me/e/20/e3q8)"]
    assert headline(tail).startswith("sqlalchemy.exc.OperationalError: (1060")
    failed = Report(["tool", "--url", "mysql://root:Pa55word@db/app"], "exited 1", 2.0, tail,
                    ["a1"], ["b2", "c3"])
    text = failed.text()
    assert "Pa55word" not in text and "root:***@db" in text
    assert text.splitlines()[0] == "$ tool --url mysql://root:***@db/app"
    assert text.splitlines()[-1].startswith(
        "exited 1 after 2.00 s: sqlalchemy.exc.OperationalError: (1060")
    assert text.splitlines()[-1].endswith("; applied a1; not reached: b2, c3")
    ok = Report(["tool"], "exited 0", 1.0, ["INFO  Running upgrade a1 -> b2"], ["b2"], [])
    assert ok.summary() == "exited 0 after 1.00 s; applied b2"
    long = Report(["tool"], "exited 1", 1.0, [f"line {i} " + "x" * 290 for i in range(40)],
                  [], ["a1"]).text()
    assert len(long) <= 4000 and "line 39" in long and "line 0 " not in long
