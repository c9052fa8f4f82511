"""The fast lane's waiting room (``src/alembic_herd/_lanewait.py``): replicas of one project
that find the database behind wait on the project's gate with the raw driver while the
first of them migrates through the normal path; they answer once the database is at its
heads, and go to the normal path together when the gate comes free otherwise (the holder
failed, was killed) - which then tells a failure as the failure of the leader they waited
for, never trying it again.

Real ``herd`` processes released together behind a ``flock`` barrier, real databases; a
revision that holds until the test opens a gate file lets the test see every replica
waiting before the migration goes on. ``HERD_FAST_LANE_DEBUG=1`` makes the lane say what
it did.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from conftest import PROJECTS, render, revision_file, rows

SCRIPT = Path(sys.executable).with_name("herd")
WAITING = "on this project's gate"
ANSWERED = "herd: fast lane: answered after waiting"
TOOK = "herd: fast lane: took the gate"
BOUND = 120.0  # seconds: a bound on waiting for what must happen, never a measurement

GATED = revision_file("e5", "d4", "e5: one data row, after the test opens the gate file "
                      "(HERD_TEST_GATE)", """
gate = os.environ.get("HERD_TEST_GATE")
bound = time.monotonic() + 120
while gate and not os.path.exists(gate) and time.monotonic() < bound:
    time.sleep(0.02)
settings = sa.table("settings", sa.column("name", sa.String), sa.column("value", sa.String))
op.bulk_insert(settings, [{"name": "e5", "value": "once"}])
""", "op.execute(\"DELETE FROM settings WHERE name = 'e5'\")", imports="import os\nimport time")

NO_HANDOFF = ("import alembic_herd._lanewait as lane; lane.baselines = lambda db, p: None; "
              "from alembic_herd._fastlane import console; console()")
"""The control: the lane hands the normal path no baselines (what it saw before waiting)."""
NO_VERIFY = ("import alembic_herd._fastlane as lane\n"
             "real, calls = lane.at_head, []\n"
             "def trusting(p, db=None):\n"
             "    calls.append(p)\n"
             "    if len(calls) == 1:\n"
             "        return real(p, db)\n"
             "    return lane.Stamp('alembic_version', None, 'alembic_version', ('f2',), ''), "
             "'writable'\n"
             "lane.at_head = trusting\n"
             "lane.console()\n")
"""The control: a lane that answers once the gate is free, without reading the stamp and
the version table."""

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no herd console script")


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")


def gated_project(tmp_path: Path) -> Path:
    where = tmp_path / "proj"
    shutil.copytree(PROJECTS / "herdset", where, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "migrations" / "versions" / "e5_gated.py").write_text(GATED)
    return where


def environment(url: URL, gate: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("HERD_") and not k.startswith("HERD_TEST_"))
           and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    env.update(HERD_FAST_LANE_DEBUG="1", DATABASE_URL=render(url), HERD_TEST_GATE=str(gate),
               HERD_TEST_FAIL_GATE=str(gate), **more)
    return env


@contextmanager
def herd_of(n: int, where: Path, args: list[str], env: dict[str, str], tmp_path: Path, *,
            program: list[str] | None = None) -> Iterator[list[Replica]]:
    """``n`` ``herd`` processes released together (a ``flock`` barrier); killed at the end
    if still running."""
    barrier = tmp_path / "barrier"
    barrier.touch()
    replicas: list[Replica] = []
    with open(barrier) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for i in range(n):
            out, err = tmp_path / f"r{i}.out", tmp_path / f"r{i}.err"
            argv = [*(program or [str(SCRIPT)]), args[0], "-c", str(where / "alembic.ini"),
                    *args[1:]]
            with open(out, "wb") as o, open(err, "wb") as e:
                proc = subprocess.Popen(["flock", "-s", str(barrier), *argv], stdout=o,
                                        stderr=e, env=env, cwd=where)
            replicas.append(Replica(proc, out, err))
        time.sleep(0.3)  # every flock is queued behind the barrier before it opens
        fcntl.flock(held, fcntl.LOCK_UN)
    try:
        yield replicas
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait(timeout=BOUND)


def until(what: str, ready: Callable[[], bool]) -> None:
    bound = time.monotonic() + BOUND
    while not ready():
        if time.monotonic() > bound:
            raise AssertionError(f"not seen within {BOUND:.0f} s: {what}")
        time.sleep(0.05)


def in_lane(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if WAITING in r.stderr()]


def all_waiting(replicas: list[Replica], n: int) -> None:
    """Until ``n`` replicas wait: in the lane, or on the normal path after the lane could
    not connect in its one short try (a loaded machine; nothing else may send a replica
    there). At least two wait in the lane."""

    def waiting(r: Replica) -> bool:
        err = r.stderr()
        return WAITING in err or ("herd: fast lane: fell back: connect" in err
                                  and "waiting for lock" in err)

    until(f"{n} replicas waiting", lambda: sum(waiting(r) for r in replicas) == n)
    assert len(in_lane(replicas)) >= min(n, 2), [r.stderr() for r in replicas]


def holder(replicas: list[Replica]) -> Replica:
    took = [r for r in replicas if TOOK in r.stderr()]
    assert len(took) == 1, [r.stderr() for r in replicas]
    return took[0]


def herd_pid(r: Replica) -> str:
    """The pid of the herd process behind ``flock`` (its log lines say ``herd[host:pid]``)."""
    found = re.search(r"herd\[[^\]]*:(\d+)\]", r.stderr())
    assert found, r.stderr()
    return found.group(1)


def finish(replicas: list[Replica]) -> list[int]:
    return [r.proc.wait(timeout=BOUND) for r in replicas]



def at_d4(where: Path, url: URL, tmp_path: Path) -> None:
    """The database at d4 (e5 pending), herd's stamp in place: the ordinary restart of a
    deploy that adds e5."""
    gated = where / "migrations" / "versions" / "e5_gated.py"
    gated.rename(tmp_path / "e5_gated.py")
    done = subprocess.run([str(SCRIPT), "migrate", "-c", str(where / "alembic.ini")],
                          env=environment(url, tmp_path / "none"), cwd=where,
                          capture_output=True, text=True, timeout=BOUND, check=False)
    assert done.returncode == 0, done.stderr
    (tmp_path / "e5_gated.py").rename(gated)


N = 5


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "behind"])
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_the_herd_waits_in_the_lane_and_the_database_is_migrated_once(
        db: URL, tmp_path: Path, fresh: bool, backend: str) -> None:
    where, gate = gated_project(tmp_path), tmp_path / "gate"
    if not fresh:
        at_d4(where, db, tmp_path)
    with herd_of(N, where, ["migrate"], environment(db, gate), tmp_path) as replicas:
        all_waiting(replicas, N - 1)
        first = holder(replicas)
        assert first not in in_lane(replicas)
        gate.touch()
        codes = finish(replicas)
    assert codes == [0] * N, [r.stderr() for r in replicas]
    assert "migrated" in first.stdout()
    for r in replicas:
        if r in in_lane(replicas):
            assert ANSWERED in r.stderr(), r.stderr()
        if r is not first:
            assert r.stdout().startswith("waited ") and r.stdout().endswith(
                "; database at e5\n"), r.stdout()
            assert (f" for pid {herd_pid(first)} on host " in r.stdout() if backend ==
                    "postgresql" else " for server connection " in r.stdout()), r.stdout()
    assert rows(db, "SELECT version_num FROM alembic_version") == [("e5",)]
    assert rows(db, "SELECT count(*) FROM settings WHERE name = 'e5'") == [(1,)]
    assert rows(db, "SELECT count(*) FROM settings WHERE name = 'seeded'") == [(1,)]


@pytest.mark.parametrize("variant", ["lane", "control-no-handoff", "control-no-verify"])
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_the_leaders_failure_reaches_the_replicas_in_the_lane(
        db: URL, tmp_path: Path, variant: str, backend: str) -> None:
    """The holder fails on f2: the replicas that waited in the lane report its failure
    (exit 9) and nobody tries f2 again. Two controls, each caught by the checks: a lane
    that hands the normal path nothing of what it saw (the replicas take herd's lock as
    newcomers and run the broken revision again: more than one failed attempt), and a lane
    that answers once the gate is free without reading the database (they exit 0)."""
    where, gate = tmp_path / "proj", tmp_path / "gate"
    shutil.copytree(PROJECTS / "fail-raise", where, ignore=shutil.ignore_patterns("__pycache__"))
    program = {"lane": None, "control-no-handoff": [sys.executable, "-c", NO_HANDOFF],
               "control-no-verify": [sys.executable, "-c", NO_VERIFY]}[variant]
    n = 4
    with herd_of(n, where, ["migrate"], environment(db, gate), tmp_path,
                 program=program) as replicas:
        all_waiting(replicas, n - 1)
        first = holder(replicas)
        gate.touch()
        codes = finish(replicas)
    failed = rows(db, "SELECT revision, status FROM herd_history WHERE status = 'failed'")
    checks = {
        "the holder failed on f2 (exit 8)": first.proc.returncode == 8,
        "every waiter exited 9": sorted(codes) == [8] + [9] * (n - 1),
        "one failed attempt": failed == [("f2", "failed")],
        "the waiters name the holder": all(
            f"pid {herd_pid(first)} " in r.stderr() and "failed on revision f2" in r.stderr()
            for r in replicas if r is not first),
    }
    if variant == "lane":
        assert all(checks.values()), (checks, codes, [r.stderr() for r in replicas])
    else:
        assert not all(checks.values()), "the control did not fail: the test cannot tell"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_holder_killed_mid_revision_sends_the_lane_to_the_normal_path(
        db: URL, tmp_path: Path) -> None:
    where, gate = gated_project(tmp_path), tmp_path / "gate"
    at_d4(where, db, tmp_path)
    with herd_of(N, where, ["migrate"], environment(db, gate), tmp_path) as replicas:
        all_waiting(replicas, N - 1)
        first = holder(replicas)
        until("the holder inside e5", lambda: "applying e5" in first.stderr())
        os.kill(int(herd_pid(first)), signal.SIGKILL)
        assert first.proc.wait(timeout=BOUND) == 128 + signal.SIGKILL  # flock says so
        assert "applied e5" not in first.stderr()  # the kill landed inside the revision
        until("a new leader inside e5", lambda: any(
            "applying e5" in r.stderr() for r in replicas if r is not first))
        gate.touch()
        codes = finish(replicas)
    others = [r for r in replicas if r is not first]
    assert sorted(c for r, c in zip(replicas, codes, strict=True) if r is not first) == [0] * (
        N - 1), [r.stderr() for r in others]
    assert sum("migrated 1 revision(s)" in r.stdout() for r in others) == 1
    assert rows(db, "SELECT version_num FROM alembic_version") == [("e5",)]
    assert rows(db, "SELECT count(*) FROM settings WHERE name = 'e5'") == [(1,)]
    statuses = sorted(str(r[0]) for r in rows(
        db, "SELECT status FROM herd_history WHERE revision = 'e5'"))
    assert statuses == ["applied", "interrupted"], statuses


@pytest.mark.parametrize("backend", ["postgresql"])
def test_sigterm_and_the_lock_timeout_in_the_lane(db: URL, tmp_path: Path) -> None:
    """SIGTERM ends a replica waiting in the lane at once (exit 143, one line); the lock
    timeout counts from the start of the lane's wait (exit 6, not a second full wait)."""
    where, gate = gated_project(tmp_path), tmp_path / "gate"
    at_d4(where, db, tmp_path)
    env = environment(db, gate)
    with herd_of(2, where, ["migrate"], env, tmp_path) as replicas:
        until("one replica waiting in the lane", lambda: len(in_lane(replicas)) == 1)
        waiter = in_lane(replicas)[0]
        os.kill(int(herd_pid(waiter)), signal.SIGTERM)
        assert waiter.proc.wait(timeout=BOUND) == 143
        assert waiter.stderr().splitlines()[-1] == (
            "herd: error: stopped by SIGTERM while waiting for the migration")
        timed = subprocess.run([str(SCRIPT), "migrate", "-c", str(where / "alembic.ini"),
                                "--lock-timeout", "1s"], env=env, cwd=where,
                               capture_output=True, text=True, timeout=BOUND, check=False)
        assert timed.returncode == 6, timed.stderr
        assert "herd: fast lane: fell back: the lock timeout came in the waiting room" in (
            timed.stderr)
        assert "Traceback" not in timed.stderr
        gate.touch()
        assert finish([r for r in replicas if r is not waiter]) == [0]
