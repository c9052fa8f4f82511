"""Scenario 1: the leader is faulted inside a revision - one scenario, one fault class each.

A herd of :data:`REPLICAS` replicas (``driver.py``: herd's replica, handling SIGTERM and
SIGINT as the CLI does) migrates the faultset (four revisions, two of them data
migrations). Each trial picks a revision at random, waits until its journal mark says it
started, and at a random point of its first half brings the fault of its class on the
process running it:

* ``sigkill`` - SIGKILL (no chance to clean up);
* ``sigterm`` / ``sigint`` - what a rollout, a scale-down, a Ctrl-C sends;
* ``sigstop-lease`` - ``--lock table`` (2 s lease): SIGSTOP until another replica has taken
  the lease over (or every other replica has stopped), then SIGCONT;
* ``sigstop-session`` - the session lock (advisory / GET_LOCK): SIGSTOP for longer than
  herd's TCP keepalives (scaled down to 4 s for the trial), then SIGCONT;
* ``mixed`` - half the herd on the session lock, half on the lease, and the leader SIGKILLed;
* ``command`` - ``herd migrate -- CMD`` (CMD: a plain ``alembic upgrade head``): SIGTERM to
  herd while CMD is inside the revision.

The trial first proves the fault landed mid-revision (the journal has the victim's run of
that revision started and not ended at the fault, and the victim was stopped by it), or runs
again (bounded; a trial whose fault never landed fails). On MariaDB, whose DDL is not
transactional, a revision cut in the middle stops every replica (exit 9/10) until an
operator repairs it: the trial does what the exit line says (undo the revision's partial
change, ``herd resolve``, run again) before checking. Then the checks
(:data:`trials.CHECKS`): no two runs overlap (committed marks, attempts), each data row
and each revision's committed marks exactly once, schema at head, the attempt log agrees
with the version table, every process's exit code documented (and the one its fault calls
for: the victim 143 / 130 / 11, the survivors 0 on PostgreSQL).

The classes that apply to SQLite (:data:`SQLITE`: the file lock and the lease; no server,
so no keepalives) run there too, its DDL transactional as PostgreSQL's.

The controls (``make faults``) switch one protection off (``driver.py``'s
``HERD_FAULT_CONTROL``: no lock at all, no take-over, no signal handling, no fence, no look
at the other lock kinds, no process group) and show each check failing, or record why it
cannot on that backend (:data:`CANNOT_FAIL`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd.errors import EXIT_CODES

from .conftest import MysqlFixture, PostgresFixture
from .trials import (
    CHECKS,
    FAULTSET,
    REVISIONS,
    Herd,
    Replica,
    Run,
    checks,
    engine,
    failures,
    inspect_database,
    kill,
    leaks,
    percentile,
    prepare,
    record,
    render,
    tally,
    until_landed,
)


@pytest.fixture(autouse=True)
def _attempt_log_before_the_first_revision(request: pytest.FixtureRequest,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """MySQL/MariaDB: herd's attempt log exists before the first revision, as on every
    deploy after the first. On a first deploy it appears only after the first revision (no
    footprint before the application's own migration), so a leader killed inside that
    revision leaves no 'running' row and the next leader meets the partly applied DDL
    (exit 8, then 10 until 'herd resolve'): the documented limit in docs/design.md ("herd's
    tables"), which these trials do not claim to cover. PostgreSQL runs on a fresh log."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("dialect") == "mysql":
        monkeypatch.setenv("HERD_TEST_EAGER_TABLES", "1")


HERE = Path(__file__).parent
DRIVER = HERE / "driver.py"
CMD = HERE / "migrate_cmd.py"
REPLICAS = 4
STEP = 0.25  # seconds each revision sleeps: the migration takes about 4 * STEP
LEASE_TTL = 2.0
KEEPALIVES = (1, 1, 2)  # scaled down for the session pause: 1 + 1 * 2 = 4 s of silence
SESSION_PAUSE = 6.0  # past the scaled keepalives
SEED = 20261203
FULL = 20


@dataclass(frozen=True)
class Fault:
    name: str
    signum: int
    lock: str = "auto"  # auto (the session lock), table (the lease), mixed (half each)
    mode: str = "herd"  # herd, or command (herd migrate -- CMD)
    control: str | None = None  # the protection a control run switches off
    cleans_up: bool = True  # the victim records its own stop (not so after SIGKILL)
    resumes: bool = False  # SIGSTOP: the victim is continued afterwards

    def options(self, index: int) -> list[str]:
        kind = self.lock if self.lock != "mixed" else ("auto", "table")[index % 2]
        opts = ["--lock", kind, "--lease-ttl", f"{LEASE_TTL:g}", "--timeout", "120"]
        if self.mode == "command":
            opts += ["--", sys.executable, str(CMD), FAULTSET]
        return opts


FAULTS = {f.name: f for f in [
    Fault("sigkill", signal.SIGKILL, control="no-lock", cleans_up=False),
    Fault("sigterm", signal.SIGTERM, control="no-signals"),
    Fault("sigint", signal.SIGINT, control="no-signals"),
    Fault("sigstop-lease", signal.SIGSTOP, lock="table", control="no-fence", resumes=True),
    Fault("sigstop-session", signal.SIGSTOP, resumes=True),
    Fault("mixed", signal.SIGKILL, lock="mixed", control="no-rivals", cleans_up=False),
    Fault("command", signal.SIGTERM, mode="command", control="no-group"),
]}


def expected_victim(fault: Fault, dialect: str) -> int:
    """The exit code the fault calls for in the process it hit."""
    if fault.signum == signal.SIGKILL:
        return -signal.SIGKILL
    if fault.name == "sigstop-lease":
        return 11  # LockLostError: the database refused its stale commit
    if fault.name == "sigstop-session":
        return 0  # the session (and its lock) outlived the pause: it finishes
    return 128 + fault.signum


def expected_survivors(fault: Fault, dialect: str) -> set[int]:
    """What the other replicas exit with: 0 where DDL is transactional; on MariaDB a
    revision cut in the middle may be half-applied, so every replica stops on it (exit 10,
    or 9 when the victim recorded it 'failed' and they report that failure). herd treats
    SQLite's DDL as not transactional (Alembic's SQLite dialect says so): a victim that
    records its stop records the revision 'failed', and the others stop on it as on
    MariaDB, although SQLite rolled it back; after a SIGKILL nothing was recorded (SQLite's
    attempt rows are written after the run) and the next leader migrates."""
    if dialect == "postgresql" or fault.name == "sigstop-session":
        return {0}
    if dialect == "sqlite" and fault.signum == signal.SIGKILL:
        return {0}  # SQLite rolled it back, and the killed leader's rows were still buffered
    return {9, 10}


# -- the fault, brought on inside a revision ----------------------------------------------


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return -1


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def _victim(herd: Herd, run: Run) -> Replica:
    """The replica running ``run``: its own pid, or (a wrapped command) its parent's."""
    for pid in (run.pid, _parent(run.pid)):
        for r in herd.replicas:
            if r.pid == pid:
                return r
    raise AssertionError(f"no replica runs pid {run.pid}")


@dataclass
class Landing:
    victim: Replica
    run: Run
    at: float
    open_at_fault: bool  # SIGSTOP: the victim's run was open (start, no end) while stopped


def _pause(herd: Herd, fault: Fault, victim: Replica, run: Run) -> bool:
    """SIGSTOP the victim, prove its run is open while it is stopped, hold it past its lease
    or past the keepalives, then SIGCONT. Whether the run was open at the stop."""
    os.kill(victim.pid, signal.SIGSTOP)
    until = time.monotonic() + 30
    while _state(victim.pid) != "T" and time.monotonic() < until:
        time.sleep(0.005)
    open_now = any(r.pid == run.pid and r.revision == run.revision and r.ended is None
                   for r in herd.journal.runs()) and _state(victim.pid) == "T"
    # past the lease: expired, taken over (a taker may then wait on the locks the paused
    # transaction holds: they are the database's, not the lease's); or past the keepalives
    time.sleep(3 * LEASE_TTL if fault.lock == "table" else SESSION_PAUSE)
    os.kill(victim.pid, signal.SIGCONT)
    return open_now


def bring_fault(herd: Herd, fault: Fault, rng: random.Random, target: str | None
                ) -> Landing:
    target = target or rng.choice(REVISIONS)
    run = herd.wait_for_run(target)
    victim = _victim(herd, run)
    time.sleep(rng.uniform(0.0, STEP / 2))
    at = time.time()
    if fault.signum == signal.SIGSTOP:
        return Landing(victim, run, at, _pause(herd, fault, victim, run))
    if fault.signum == signal.SIGKILL:
        kill(victim.pid)
    else:
        os.kill(victim.pid, fault.signum)
    return Landing(victim, run, at, False)


def landed(herd: Herd, fault: Fault, landing: Landing) -> bool:
    """The fault hit the victim's run of the revision in the middle: for a signal that
    stops the process, that run started before it and never ended and the process did
    exit (a wrapped command: the run was under way when herd got the signal, and herd
    exited); for SIGSTOP, the run was open while the process was stopped."""
    if fault.resumes:
        return landing.open_at_fault
    # a wrapped command: the signal hit herd while CMD was inside the revision (herd stops
    # CMD; without the group, the control's CMD lives on)
    hit = Run.active_at if fault.mode == "command" else Run.cut_by
    cut = any(r.pid == landing.run.pid and r.revision == landing.run.revision
              and hit(r, landing.at) for r in herd.runs)
    return cut and landing.victim.returncode is not None


# -- MariaDB: what the exit line tells an operator to do --------------------------------------

UNDO = {
    "m1": ["DROP TABLE IF EXISTS items"],
    "m2": ["DROP TABLE IF EXISTS partial_b", "DROP TABLE IF EXISTS partial_a"],
    "m3": ["DELETE FROM items WHERE name = 'second'"],
    "m4": ["DROP INDEX IF EXISTS ix_items_name ON items",  # MariaDB
           "DROP INDEX IF EXISTS ix_items_name"],  # SQLite
}


def repair(url: URL) -> list[str]:
    """Do what herd's exit line says, and nothing it does not: while a migration stops on a
    half-applied revision (exit 10, or 9 naming it), undo that revision's partial change
    (its DDL, its rows, its marks) and ``herd resolve`` it; then migrate. A revision herd
    recorded as rolled back ('interrupted') is not repaired: if that was untrue, the
    migration fails here and the checks say so. What was resolved."""
    resolved = []
    for _ in range(len(REVISIONS) + 1):
        try:
            alembic_herd.upgrade(FAULTSET, url=render(url), lock_timeout=60)
            break
        except (alembic_herd.IncompleteRevisionError, alembic_herd.LeaderFailedError) as stop:
            revision = stop.revision
            assert revision is not None, stop
            if revision not in current(url):
                undo(url, revision)
            alembic_herd.resolve(FAULTSET, revision, url=render(url))
            resolved.append(revision)
        except alembic_herd.HerdError as exc:
            resolved.append(f"recovery failed: {exc}")
            break
    return resolved


def undo(url: URL, revision: str) -> None:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            for sql in UNDO[revision]:
                with contextlib.suppress(sa.exc.DBAPIError):  # nothing of it there
                    conn.execute(sa.text(sql))
            conn.execute(sa.text("DELETE FROM fault_marks WHERE revision = :r"),
                         {"r": revision})
    finally:
        eng.dispose()


def current(url: URL) -> set[str]:
    """The revisions applied (the version table and what precedes it)."""
    facts = inspect_database(url)
    at = facts.versions[0] if facts.versions else ""
    return set(REVISIONS[:REVISIONS.index(at) + 1]) if at in REVISIONS else set()


# -- one trial --------------------------------------------------------------------------------


def run_trial(fault: Fault, database: Callable[[], AbstractContextManager[URL]], dialect: str,
              rng: random.Random, tpm: bool, secret: str, *, control: str = "",
              target: str | None = None) -> dict[str, Any]:
    with database() as url:
        env = {"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0",
               "HERD_FAULT_URL": render(url), "HERD_FAULT_CONTROL": control}
        if fault.name == "sigstop-session":
            env["HERD_FAULT_KEEPALIVES"] = ",".join(map(str, KEEPALIVES))
        herd = Herd(env=env)
        for i in range(REPLICAS):
            herd.add(fault.mode, url, *fault.options(i), program=DRIVER)
        herd.release()
        landing = bring_fault(herd, fault, rng, target)
        replicas = herd.finish()
        victim = landing.victim
        hit = landed(herd, fault, landing)
        survivors = [r for r in replicas if r is not victim]
        codes = {"victim": victim.returncode,
                 "survivors": dict(Counter(r.returncode for r in survivors))}
        resolved = repair(url) if dialect != "postgresql" else []
        facts = inspect_database(url)
        found = checks(facts, stopped=set() if fault.cleans_up else {victim.pid})
        documented = set(EXIT_CODES) | {0}
        for r in replicas:
            killed = r is victim and fault.signum == signal.SIGKILL
            if r.returncode not in documented and not (killed and r.returncode == -fault.signum):
                found["exits"].append(f"pid {r.pid} exit {r.returncode} is not documented: "
                                      f"{r.stderr[-300:]!r}")
        want = expected_victim(fault, dialect)
        if victim.returncode != want:
            found["exits"].append(f"the victim exited {victim.returncode}, expected {want}: "
                                  f"{victim.report.get('error', victim.stderr[-300:])}")
        allowed = expected_survivors(fault, dialect)
        found["exits"] += [f"survivor {r.pid} exited {r.returncode}, expected one of "
                           f"{sorted(allowed)}: {r.report.get('error', r.stderr[-300:])}"
                           for r in survivors if r.returncode not in allowed]
        if dialect == "mysql" and hit and fault.name != "sigstop-session":
            ran = sorted({f"{run.revision}@{run.pid}" for run in herd.runs
                          if run.pid != landing.run.pid})
            if ran:  # a half-applied revision must stop everyone until it is repaired
                found["rows"].append(f"survivors ran revisions after the cut one: {ran}")
        return {
            "class": fault.name, "tpm": tpm, "target": landing.run.revision,
            "victim": victim.pid, "landed": hit, "control": control,
            "fault": f"{fault.name} inside {landing.run.revision}" if hit else
            f"{fault.name} aimed at {landing.run.revision}, no run cut "
            f"(exit {victim.returncode})",
            "codes": codes, "resolved": resolved,
            "failed_checks": [name for name in CHECKS if found[name]],
            "recovery_seconds": round(max([r.report.get("finished", landing.at)
                                           for r in survivors]) - landing.at, 3),
            "statuses": [(h["revision"], h["status"], h["pid"] == victim.pid)
                         for h in facts.history],
            "problems": [f"{name}: {p}" for name in CHECKS for p in found[name]],
            "leaks": leaks(secret, herd.outputs),
            "tails": {r.pid: r.stderr[-1500:] for r in replicas}
            if any(found.values()) or max([r.report.get("seconds", 0) for r in replicas]) > 30
            else {},
        }


# -- the scenarios ------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_database() -> Iterator[URL]:
    """A fresh SQLite database file (with ``fault_marks``) in a folder of its own: the
    file lock's sidecar goes beside it."""
    folder = Path(tempfile.mkdtemp(prefix="herd-fault-sqlite-"))
    os.chmod(folder, 0o777)  # a replica may run as another user
    url = URL.create("sqlite", database=str(folder / "faults.db"))
    prepare(url)
    try:
        yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def backend_of(dialect: str, request: pytest.FixtureRequest) -> tuple[str, Any]:
    if dialect == "sqlite":
        return "sqlite", sqlite_database
    if dialect == "postgresql":
        pg: PostgresFixture = request.getfixturevalue("fault_pg")
        return "postgresql", pg.database
    maria: MysqlFixture = request.getfixturevalue("mariadb")
    return "mysql", maria.database


DIALECTS = ("postgresql", "mysql")
SQLITE = ("sigkill", "sigterm", "sigint", "sigstop-lease", "command")
"""The classes that apply to SQLite: no server (no keepalives, no restart, no partition), one
lock kind per file besides the lease (mixed kinds are the lease against the file lock, not
covered here)."""
FAST = [("sigkill", "postgresql"), ("sigkill", "mysql"), ("sigterm", "postgresql"),
        ("sigint", "mysql"), ("sigstop-lease", "postgresql"), ("sigstop-lease", "mysql"),
        ("sigstop-session", "postgresql"), ("mixed", "mysql"), ("command", "postgresql"),
        ("sigterm", "sqlite")]
"""``make test``'s quick variant: one trial of each class, on one backend or both (the
full variant, ``make faults``, runs every class on both)."""
CASES = [pytest.param(f, d, 1, id=f"{d}-fast-{f}") for f, d in FAST] + [
    pytest.param(f, d, FULL, id=f"{d}-full-{f}", marks=pytest.mark.slow)
    for d in DIALECTS for f in ("sigterm", "sigstop-lease", "mixed", "command", "sigint",
                                "sigkill", "sigstop-session")] + [
    pytest.param(f, "sqlite", FULL, id=f"sqlite-full-{f}", marks=pytest.mark.slow)
    for f in SQLITE]


BACKEND_NAMES = {"postgresql": "PostgreSQL (the suite's own server, SCRAM password)",
                 "mysql": "MariaDB (HERD_TEST_MYSQL_URL, a user with a password)",
                 "sqlite": "SQLite (a database file per trial)"}


def trials_of(fault: Fault, backend: tuple[str, Any], trials: int, secret: str
              ) -> list[dict[str, Any]]:
    dialect, database = backend
    rng = random.Random(f"{SEED}-{fault.name}-{dialect}-{trials}")
    return [until_landed(partial(run_trial, fault, database, dialect, rng,
                                 dialect != "mysql" and n % 2 == 1, secret))
            for n in range(trials)]


@pytest.mark.parametrize(("fault", "dialect", "trials"), CASES)
@pytest.mark.timeout(3600)
def test_leader_fault(fault: str, dialect: str, trials: int, request: pytest.FixtureRequest,
                      secret: str) -> None:
    """The leader faulted inside a revision: every trial proves its fault landed there,
    then: no overlapping runs, each row once, schema at head (after the operator's repair
    on MariaDB), attempt log true, every exit code documented and as the fault calls for."""
    chosen = FAULTS[fault]
    results = trials_of(chosen, backend_of(dialect, request), trials, secret)
    recovery = [r["recovery_seconds"] for r in results if r["landed"]]
    record(f"leader-{fault}-{dialect}-{'full' if trials > 1 else 'fast'}", {
        "class": fault, "dialect": dialect, "backend": BACKEND_NAMES[dialect],
        "replicas": REPLICAS, "revisions": len(REVISIONS), "step_seconds": STEP,
        **tally(results),
        "where": dict(Counter(r["fault"] for r in results)),
        "codes": dict(Counter(f"victim {r['codes']['victim']}" for r in results)),
        "resolved": sum(bool(r["resolved"]) for r in results),
        "recovery_seconds": {"median": percentile(recovery, 0.5),
                             "max": max(recovery or [0])},
        "checks": list(CHECKS),
        "trials_detail": results,
    })
    assert not failures(results), failures(results)


CONTROLS = [
    # (fault class, protection switched off, revision aimed at or None: at random,
    #  per-migration transactions (PostgreSQL) or one transaction)
    ("sigkill", "no-lock", "m1", False), ("sigkill", "no-lock", "m3", True),
    ("sigkill", "no-takeover", None, False), ("sigkill", "no-takeover", None, True),
    ("sigterm", "no-signals", None, False), ("sigterm", "no-signals", None, True),
    ("sigint", "no-signals", None, False), ("sigint", "no-signals", None, True),
    ("sigstop-lease", "no-fence", "m1", False), ("sigstop-lease", "no-fence", "m1", True),
    ("mixed", "no-rivals", None, False), ("mixed", "no-rivals", "m1", True),
    ("command", "no-group", None, False), ("command", "no-group", None, True),
]
"""The control trials, each with its class's protection switched off (:attr:`Fault.control`).
A stale m1 inserts a second version row (no-fence); every replica at once in m1 (no-lock)
or two kinds of leader at once in m1 (no-rivals) cut the first revision twice."""

CANNOT_FAIL: dict[str, dict[str, str]] = {"postgresql": {}, "mysql": {
    "head": "a MariaDB trial checks the schema after the operator's recovery that herd's exit "
            "line calls for (undo the named revision's partial change, `herd resolve`, migrate "
            "again: it finishes what no replica took over, too), and no switch leaves a "
            "schema that recovery cannot bring to head: DDL run "
            "twice fails loudly ('already exists') and a DML revision run twice is refused by "
            "the version row's compare-and-set, so every control's damage is to a revision "
            "the log or the exit line names (its overlap, rows, log and exits checks fail "
            "instead), and the recovery repairs that revision",
}}
"""Per backend, the checks no control makes fail, and why (the report prints it)."""


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.timeout(3600)
def test_controls_show_each_check_failing(dialect: str, request: pytest.FixtureRequest,
                                          secret: str) -> None:
    """With one protection switched off per fault class (no lock at all, no take-over by a
    waiting replica, signal handling, the lease's fence, the look at the other lock kinds,
    the wrapped command's process group), every trial's fault lands, and each check fails
    in some control trial (but those :data:`CANNOT_FAIL` names for the backend, with the
    reason)."""
    backend = backend_of(dialect, request)
    rng = random.Random(f"{SEED}-control-{dialect}")
    results = []
    for name, control, target, tpm in CONTROLS:
        results.append(until_landed(partial(
            run_trial, FAULTS[name], backend[1], dialect, rng, tpm and dialect == "postgresql",
            secret, control=control, target=target)))
    failed = Counter(name for r in results if r["landed"] for name in r["failed_checks"])
    record(f"controls-{dialect}", {
        "dialect": dialect, "backend": BACKEND_NAMES[dialect], "replicas": REPLICAS,
        "trials": len(results), "landed": sum(bool(r["landed"]) for r in results),
        "by_control": {f"{r['class']} / {r['control']}": r["failed_checks"] for r in results},
        "failed_checks": {name: failed[name] for name in CHECKS},
        "failed_by": {name: sorted({f"{r['class']} / {r['control']}" for r in results
                                    if r["landed"] and name in r["failed_checks"]})
                      for name in CHECKS},
        "cannot_fail": CANNOT_FAIL[dialect],
        "trials_detail": results,
    })
    assert all(r["landed"] for r in results), [r["fault"] for r in results]
    missing = [name for name in CHECKS if not failed[name] and name not in CANNOT_FAIL[dialect]]
    assert not missing, f"no control made these checks fail: {missing}"
