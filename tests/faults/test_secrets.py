"""Scenario 7: the database password never appears in anything herd prints.

Every scenario of this suite connects as a role with a password and checks that no line
its replicas print (stdout, and stderr with herd's log at INFO) contains it. This test adds
the ``herd`` command's paths most likely to print a URL - a migration at -v, status and
history as JSON, a refused password (with --traceback), an unreachable server, a lock
timeout naming the holder - with the password in --url, in HERD_DATABASE_URL and in
--lock-url.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from alembic_herd._database import create_engine
from alembic_herd.locks import LockKey, create_lock

from .conftest import PostgresFixture
from .infra import free_port
from .trials import FAULTSET, leaks, record, render

HERD = str(Path(sys.executable).with_name("herd"))


def herd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERD, *args], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_the_password_is_never_printed_by_herd_on_any_path(
        fault_pg: PostgresFixture, secret: str) -> None:
    """Migrating at -v, status and history as JSON, a refused password with --traceback, an
    unreachable server and a lock timeout naming the holder print no line containing the
    password, whether it came in --url, HERD_DATABASE_URL or --lock-url."""
    runs: dict[str, Any] = {}
    with fault_pg.database() as url:
        good = render(url)
        wrong = render(url.set(password=f"{secret}-wrong"))
        nowhere = render(url.set(port=free_port()))
        cases = {
            "migrate -v (--url)": herd("migrate", "-c", FAULTSET, "--url", good, "-v"),
            "status --json (HERD_DATABASE_URL)": herd(
                "status", "-c", FAULTSET, "--json", env={"HERD_DATABASE_URL": good}),
            "history --json (--lock-url)": herd("history", "-c", FAULTSET, "--url", good,
                                                "--lock-url", good, "--json"),
            "refused password --traceback": herd("migrate", "-c", FAULTSET, "--url", wrong,
                                                 "--traceback", "--lock-timeout", "5s"),
            "unreachable server": herd("check", "-c", FAULTSET, "--url", nowhere),
        }
        engine = create_engine(url)
        with engine.connect() as conn:  # hold herd's lock: the next run times out naming us
            conn.execute(sa.text("DELETE FROM alembic_version"))
            lock = create_lock("advisory", conn, LockKey.for_version_table(
                "alembic_version", None, None))
            assert lock.try_acquire()
            cases["lock timeout naming the holder"] = herd(
                "migrate", "-c", FAULTSET, "--url", good, "--lock-timeout", "2s")
        engine.dispose()
    expected = {"migrate -v (--url)": 0, "status --json (HERD_DATABASE_URL)": 0,
                "history --json (--lock-url)": 0, "refused password --traceback": 4,
                "unreachable server": 4, "lock timeout naming the holder": 6}
    problems = []
    for name, proc in cases.items():
        found = leaks(secret, [proc.stdout, proc.stderr])
        runs[name] = {"exit": proc.returncode, "lines": len((proc.stdout + proc.stderr)
                                                            .splitlines()),
                      "leaks": len(found)}
        if proc.returncode != expected[name]:
            problems.append(f"{name}: exit {proc.returncode}, expected {expected[name]}: "
                            f"{proc.stderr[-500:]}")
        problems += [f"{name}: {line}" for line in found]
    assert "***" in cases["refused password --traceback"].stderr
    record("secrets", {"runs": runs, "failures": len(problems),
                       "checks": ["no line of stdout/stderr contains the password",
                                  "each command exits as documented"]})
    assert not problems, problems
