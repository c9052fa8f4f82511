"""No fragment of a password reaches herd's output: every verb, every output mode, every place
a URL comes from, with passwords that carry un-encoded ``@``, ``:`` and ``/``.

SQLAlchemy's URL parser ends the password at the *first* ``@`` and takes the rest for the
host, so ``u:p@ss:w@rd9@db`` used to show ``ss:w@rd9`` wherever herd printed the URL or the
driver's complaint about that "host". Each case runs the real ``herd`` command; a case fails
when any 4-character substring of the password appears on stdout or stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from alembic_herd.errors import EXIT_CODES, INTERNAL_ERROR
from conftest import PROJECTS, make_database, render
from test_bad_inputs import fragments

PASSWORDS = ["p@ss:w@rd9", "Zq:7@/mQk", "Kw9#Rt!xV"]
VERBS: list[tuple[str, ...]] = [
    ("status",), ("check",), ("wait", "--timeout", "1s"), ("history",), ("resolve", "a1"),
    ("unlock",), ("migrate",), ("run", "--", sys.executable, "-c", "pass"),
]
"""In this order on one database: the looks first, then migrate and run (already current)."""
MODES: list[tuple[str, ...]] = [(), ("-v",), ("--traceback",), ("--log-format", "json")]
SOURCES = ["--url", "environment", "--lock-url", "alembic.ini"]


@dataclass(frozen=True)
class Run:
    password: str
    source: str
    args: tuple[str, ...]
    proc: subprocess.CompletedProcess[str]


def raw_url(url: URL, password: str) -> str:
    """``url`` with ``password`` spelt out as people write it: not percent-encoded."""
    return render(url.set(password="PLACEHOLDER")).replace("PLACEHOLDER", password, 1)


def invocation(verb: tuple[str, ...], mode: tuple[str, ...], source: str, url: URL,
               password: str, folder: Path) -> tuple[list[str], dict[str, str]]:
    """herd's arguments and environment with the URL given the way ``source`` says."""
    ini = str(PROJECTS / "herdset" / "alembic.ini")
    raw = raw_url(url, password)
    extra: list[str] = []
    env: dict[str, str] = {}
    if source == "--url":
        extra = ["--url", raw]
    elif source == "environment":
        env = {"HERD_DATABASE_URL": raw}
    elif source == "--lock-url":  # --url percent-encoded, the lock's URL spelt out
        extra = ["--url", render(url.set(password=password)), "--lock-url", raw]
    else:
        ini = str(folder / "alembic.ini")
        (folder / "alembic.ini").write_text(
            (PROJECTS / "herdset" / "alembic.ini").read_text()
            .replace("%(here)s/migrations", str(PROJECTS / "herdset" / "migrations"))
            .replace("sqlalchemy.url =", f"sqlalchemy.url = {raw.replace('%', '%%')}"))
    command = list(verb)
    tail: list[str] = []
    if "--" in command:
        cut = command.index("--")
        command, tail = command[:cut], command[cut:]
    return [*command, "-c", ini, *mode, *extra, *tail], env


def herd(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items()
                 if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
                 and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    child_env.update(env)
    return subprocess.run([sys.executable, "-m", "alembic_herd.cli", *args], env=child_env,
                          capture_output=True, text=True, timeout=60, check=False)


def one_database(password: str, url: URL, folder: Path) -> list[Run]:
    """Every verb in every mode on one database, the URL's source taking turns so that each
    mode meets each source."""
    runs = []
    for v, verb in enumerate(VERBS):
        for m, mode in enumerate(MODES):
            source = SOURCES[(v + m) % len(SOURCES)]
            args, env = invocation(verb, mode, source, url, password, folder)
            runs.append(Run(password, source, tuple(args), herd(args, env)))
    return runs


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[URL]]:
    """One fresh PostgreSQL database per password (the embedded server trusts local
    connections, so any password gets in)."""
    makers = [make_database("postgresql", request, tmp_path) for _ in PASSWORDS]
    try:
        yield [next(maker) for maker in makers]
    finally:
        for maker in makers:
            next(maker, None)


def test_no_fragment_of_a_password_in_any_verb_mode_or_source(
        databases: list[URL], tmp_path: Path) -> None:
    """Passwords with un-encoded '@', ':' and '/', given by --url, the environment,
    --lock-url or alembic.ini, show no 4-character fragment in any verb's output, in text,
    -v, --traceback and JSON modes, while every verb still reaches the database."""
    folders = [tmp_path / f"p{i}" for i in range(len(PASSWORDS))]
    for folder in folders:
        folder.mkdir()
    with ThreadPoolExecutor(len(PASSWORDS)) as pool:
        runs = [run for batch in pool.map(one_database, PASSWORDS, databases, folders)
                for run in batch]
    assert len(runs) == len(PASSWORDS) * len(VERBS) * len(MODES)
    for run in runs:
        output = run.proc.stdout + run.proc.stderr
        where = (run.source, run.args, output)
        assert not fragments(run.password, output), where
        assert run.proc.returncode in EXIT_CODES, where
        assert run.proc.returncode not in (INTERNAL_ERROR, 4), where  # it got in
    migrated = [r for r in runs if r.args[0] == "migrate"]
    assert any(r.proc.stdout.startswith("migrated 4 revision(s)") for r in migrated)


@pytest.mark.parametrize("verb", [v[0] for v in VERBS if v[0] != "unlock"])
def test_no_fragment_of_a_password_when_the_host_is_unreachable(verb: str,
                                                                 tmp_path: Path) -> None:
    """An unreachable server (exit 4: the URL and the driver's complaint are printed) shows
    no fragment of the password, with the traceback, debug logging and JSON logs on (the
    passwords and the URL's sources take turns over the verbs)."""
    turn = [v[0] for v in VERBS].index(verb)
    password = PASSWORDS[turn % len(PASSWORDS)]
    url = make_url("postgresql+psycopg://app@127.0.0.1:1/app")
    spec = next(v for v in VERBS if v[0] == verb)
    if verb == "wait":
        spec = ("wait", "--timeout", "1s")
    args, env = invocation(spec, ("--traceback", "-v", "--log-format", "json"),
                           SOURCES[turn % len(SOURCES)], url, password, tmp_path)
    bound = {"migrate": "--lock-timeout", "resolve": "--lock-timeout", "run": "--lock-timeout",
             "status": "--connect-timeout", "check": "--connect-timeout",
             "history": "--connect-timeout"}
    if verb in bound:
        args = [args[0], bound[verb], "1s", *args[1:]]
    proc = herd(args, env)
    assert proc.returncode in (4, 7), proc.stderr  # unreachable (wait: not current in time)
    assert not fragments(password, proc.stdout + proc.stderr), proc.stderr
