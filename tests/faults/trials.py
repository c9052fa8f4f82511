"""Herds of real processes, where their faults landed, what the database looks like
afterwards, and the figures.

:class:`Herd` starts replicas (``demo/replica.py``), releases them together behind a barrier,
and keeps every byte they print (the suite checks that no password ever appears). Its
:class:`Journal` is where the faultset's revisions say, outside any transaction, that they
started and ended (``projects/faultset/faultset_marks.py``): a trial times its fault by it
(:meth:`Herd.wait_for_run`) and then proves from it that the fault landed - a :class:`Run`
of a revision was under way when the fault came. :func:`until_landed` runs a trial again,
a bounded number of times, when its fault did not land; a trial whose fault never landed is
a failure (:func:`tally`), never a pass.
:func:`inspect_database` reads back what a trial left: the version table, the data
migrations' rows, the committed ``fault_marks`` (each revision writes 'start' and 'end'
marks with its pid inside its own transaction), their overlaps, and herd's history.
:func:`record` writes a scenario's figures as JSON when ``HERD_FAULTS_RESULTS`` names a
folder (``make faults`` does; the report is built from them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from alembic_herd.demo import replica

HERE = Path(__file__).parent
CHILD = Path(replica.__file__)  # the shared replica program
FAULTSET = str(HERE / "projects" / "faultset" / "alembic.ini")
HEAD = "m4"
REVISIONS = ("m1", "m2", "m3", "m4")
BOUND = 120.0  # seconds: a bound on waiting for what must happen, never a measurement
RERUNS = 2  # a trial whose fault did not land is run again at most this many times


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    label: str
    stdout: str = ""
    stderr: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


@dataclass(frozen=True)
class Run:
    """One process's run of one revision, from the journal (wall-clock seconds);
    ``ended`` is None when the run was cut: it has no end mark."""

    pid: int
    revision: str
    started: float
    ended: float | None

    def active_at(self, moment: float) -> bool:
        return self.started <= moment and (self.ended is None or self.ended > moment)

    def cut_by(self, moment: float) -> bool:
        """Under way at ``moment`` and never ended: the fault at that moment cut it."""
        return self.started <= moment and self.ended is None


class Journal:
    """The file the faultset's revisions append ``<time> <pid> <revision> start|end`` lines
    to (fsynced, outside any transaction: a kill, a rollback or a restart cannot undo them)."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="herd-fault-journal-")
        os.close(fd)
        os.chmod(name, 0o666)  # a replica may run as another user
        self.path = Path(name)

    def runs(self) -> list[Run]:
        """Every run so far, in the order they started. A process's next mark closes its
        open run: an end of the same revision ends it; anything else means it was cut."""
        under_way: dict[int, tuple[str, float]] = {}
        found = []
        for line in self.path.read_text().split("\n")[:-1]:  # a line is whole once it ends
            at, pid_text, revision, event = line.split()
            pid = int(pid_text)
            if pid in under_way:
                began_rev, began = under_way.pop(pid)
                ended = float(at) if event == "end" and began_rev == revision else None
                found.append(Run(pid, began_rev, began, ended))
            if event == "start":
                under_way[pid] = (revision, float(at))
        found += [Run(pid, rev, began, None) for pid, (rev, began) in under_way.items()]
        return sorted(found, key=lambda r: r.started)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Herd:
    """Replicas started together: :meth:`add` them, :meth:`release` the barrier,
    :meth:`finish` to collect. Every output is kept in :attr:`outputs`; the revisions' runs
    are in :attr:`journal` while the herd runs and in :attr:`runs` after :meth:`finish`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.journal = Journal()
        self.env = {**os.environ, **(env or {}), "HERD_FAULT_JOURNAL": str(self.journal.path)}
        self.replicas: list[Replica] = []
        self.released_at = 0.0  # wall clock, as the journal's
        self.runs: list[Run] = []

    def add(self, mode: str, url: URL | str, *options: str, config: str = FAULTSET,
            env: dict[str, str] | None = None, prefix: Sequence[str] = (),
            label: str = "replica", program: Path = CHILD) -> Replica:
        url = render(url) if isinstance(url, URL) else url
        proc = subprocess.Popen(
            [*prefix, sys.executable, str(program), mode, config, url, *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**self.env, **(env or {})})
        replica = Replica(proc, label)
        self.replicas.append(replica)
        return replica

    def ready(self, replicas: Sequence[Replica] | None = None) -> None:
        for r in replicas or self.replicas:
            assert r.proc.stdout is not None
            if r.ready:
                continue
            line = r.proc.stdout.readline()
            if line.strip() != "ready":
                self.kill_all()
                raise RuntimeError(f"replica did not get ready: {line!r} "
                                   f"{r.proc.stderr.read() if r.proc.stderr else ''}")
            r.ready = True

    def release(self, replicas: Sequence[Replica] | None = None) -> None:
        """Wait until every replica has imported everything, then open the barrier."""
        chosen = list(replicas or self.replicas)
        self.ready(chosen)
        self.released_at = time.time()
        for r in chosen:
            assert r.proc.stdin is not None
            r.proc.stdin.write("go\n")
            r.proc.stdin.flush()

    def wait_for_run(self, revision: str, pid: int | None = None) -> Run:
        """The first run of ``revision`` (by ``pid``, if given) to start; fails when every
        replica exited first or after :data:`BOUND` seconds."""
        until = time.monotonic() + BOUND
        while time.monotonic() < until:
            for run in self.journal.runs():
                if run.revision == revision and pid in (None, run.pid):
                    return run
            if all(r.proc.poll() is not None for r in self.replicas):
                break
            time.sleep(0.005)
        self.kill_all()
        self.finish()
        raise AssertionError(f"no run of {revision} started: "
                             f"{[r.stderr[-600:] for r in self.replicas]}")

    def finish(self, timeout: float = BOUND * 2) -> list[Replica]:
        until = time.monotonic() + timeout
        for r in self.replicas:
            try:
                out, err = r.proc.communicate(timeout=max(1.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                out, err = r.proc.communicate()
            r.stdout, r.stderr = out, err
            for line in out.splitlines():
                if line.startswith("{"):
                    r.report = json.loads(line)
        self.runs = self.journal.runs()
        self.journal.remove()
        return self.replicas

    def kill_all(self) -> None:
        for r in self.replicas:
            if r.proc.poll() is None:
                r.proc.kill()

    @property
    def outputs(self) -> list[str]:
        return [text for r in self.replicas for text in (r.stdout, r.stderr)]


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- the database afterwards ---------------------------------------------------------------


def engine(url: URL) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


def rows(url: URL, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        eng.dispose()


def prepare(url: URL) -> None:
    """The marks table every faultset revision writes into (outside any migration)."""
    stamp, serial = {
        "mysql": ("TIMESTAMP(6)", "INTEGER AUTO_INCREMENT PRIMARY KEY"),
        "sqlite": ("TIMESTAMP", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    }.get(url.get_backend_name(), ("TIMESTAMPTZ", "SERIAL PRIMARY KEY"))
    eng = engine(url)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text(f"CREATE TABLE fault_marks (id {serial}, pid INTEGER NOT NULL, "
                                 f"revision VARCHAR(32) NOT NULL, event VARCHAR(16) NOT NULL, "
                                 f"at {stamp} NOT NULL)"))
    finally:
        eng.dispose()


def holder_pid(url: URL) -> int | None:
    """The pid of the replica holding herd's PostgreSQL advisory lock (its session's
    application_name is ``herd <pid> <since> <host>``), or None."""
    found = rows(url, "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                      "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                      "AND a.datname = current_database()")
    for (name,) in found:
        parts = (name or "").split(" ")
        if len(parts) >= 2 and parts[0] == "herd" and parts[1].isdigit():
            return int(parts[1])
    return None


def _utc(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):  # SQLite: text, in UTC
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class Facts:
    versions: list[str] | None
    seeded: int | None
    second: int | None
    starts: Counter[str]
    ends: Counter[str]
    overlaps: list[str]
    history: list[dict[str, Any]]
    marks: list[tuple[int, str, str]] = field(default_factory=list)
    """(pid, revision, event) of every committed mark, in order."""

    def summary(self) -> dict[str, Any]:
        return {"versions": self.versions, "seeded": self.seeded, "second": self.second,
                "starts": dict(self.starts), "overlaps": self.overlaps,
                "history": [(h["revision"], h["status"], h["pid"]) for h in self.history]}


def _maybe(url: URL, sql: str) -> list[tuple[Any, ...]] | None:
    try:
        return rows(url, sql)
    except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
        if isinstance(exc, sa.exc.OperationalError) and "no such table" not in str(exc):
            raise  # SQLite says OperationalError for a missing table, and only then here
        return None


def inspect_database(url: URL) -> Facts:
    versions = _maybe(url, "SELECT version_num FROM alembic_version")
    items = _maybe(url, "SELECT name, count(*) FROM items GROUP BY name")
    counts = dict(items or [])
    marks = rows(url, "SELECT pid, revision, event, at FROM fault_marks ORDER BY id")
    history = _maybe(url, "SELECT id, attempt, revision, status, started, finished, error, "
                          "host, pid FROM herd_history ORDER BY id") or []
    keys = ("id", "attempt", "revision", "status", "started", "finished", "error", "host",
            "pid")
    return Facts(
        versions=None if versions is None else sorted(v for (v,) in versions),
        seeded=None if items is None else counts.get("seeded", 0),
        second=None if items is None else counts.get("second", 0),
        starts=Counter(rev for _, rev, event, _ in marks if event == "start"),
        ends=Counter(rev for _, rev, event, _ in marks if event == "end"),
        overlaps=overlaps(marks),
        history=[dict(zip(keys, h, strict=True)) for h in history],
        marks=[(pid, rev, event) for pid, rev, event, _ in marks],
    )


def overlaps(marks: list[tuple[Any, ...]]) -> list[str]:
    """Pairs of committed revision runs by different processes that overlap in time."""
    spans: dict[tuple[int, str], list[datetime]] = {}
    for pid, rev, _event, at in marks:
        spans.setdefault((pid, rev), []).append(_utc(at))  # type: ignore[arg-type]
    runs = [(pid, rev, min(times), max(times)) for (pid, rev), times in spans.items()]
    found = []
    for i, (pid_a, rev_a, start_a, end_a) in enumerate(runs):
        for pid_b, rev_b, start_b, end_b in runs[i + 1:]:
            if pid_a != pid_b and start_a < end_b and start_b < end_a:
                found.append(f"{rev_a}@{pid_a} overlaps {rev_b}@{pid_b}")
    return found


CHECKS = ("overlap", "rows", "head", "log", "exits")
"""What every fault trial checks afterwards, by name: no two runs overlap, each data row (and
each revision's committed marks) exactly once, the schema at head, an attempt log that
agrees with the version table, every process's exit code documented."""


def checks(facts: Facts, *, stopped: Collection[int] = ()) -> dict[str, list[str]]:
    """What is wrong with a trial that should have reached head, by check (all but
    ``exits``): no overlapping committed runs or attempts; each data migration's row and each
    revision's committed marks once; the version table at head; a history that tells what
    happened (every revision applied once; nothing left 'failed'; 'running' only for a
    process in ``stopped`` (killed, or cut off from the database) whose revision is in the
    version table: it committed and was stopped before recording the end, which the next
    migration's leader reconciles)."""
    found: dict[str, list[str]] = {name: [] for name in CHECKS}
    found["overlap"] += facts.overlaps + history_overlaps(facts.history)
    if facts.versions != [HEAD]:
        found["head"].append(f"version table {facts.versions}, expected [{HEAD!r}]")
    if (facts.seeded, facts.second) != (1, 1):
        found["rows"].append(f"data migrations' rows: seeded={facts.seeded} "
                             f"second={facts.second}")
    for rev in REVISIONS:
        if facts.starts[rev] != 1 or facts.ends[rev] != 1:
            found["rows"].append(f"{rev} committed {facts.starts[rev]} start / "
                                 f"{facts.ends[rev]} end marks, expected 1")
    applied = Counter(h["revision"] for h in facts.history if h["status"] == "applied")
    running = [h for h in facts.history if h["status"] == "running"]
    committed = set(facts.versions or [])
    for rev in REVISIONS:
        late = [h for h in running if h["revision"] == rev and h["pid"] in stopped]
        if applied[rev] + len(late) != 1:
            found["log"].append(f"history: {rev} applied {applied[rev]} time(s)")
    for h in facts.history:
        if h["status"] == "failed":
            found["log"].append(f"history: {h['revision']} failed: {h['error']}")
        if h["status"] == "running" and (h["pid"] not in stopped
                                         or h["revision"] not in committed):
            found["log"].append(f"history: {h['revision']} still 'running' (pid {h['pid']})")
    return found


def check_consistent(facts: Facts, *, stopped: Collection[int] = ()) -> list[str]:
    """:func:`checks` as one list (the committed runs' overlaps, the rows, the head, the
    history; attempts' overlaps are :func:`history_overlaps`, checked where a scenario
    wants them)."""
    found = checks(facts, stopped=stopped)
    found["overlap"] = list(facts.overlaps)
    return [problem for name in CHECKS for problem in found[name]]


def history_overlaps(history: list[dict[str, Any]]) -> list[str]:
    """Attempts whose revisions ran at the same time (from herd_history's timestamps)."""
    spans: dict[str, list[datetime]] = {}
    for h in history:
        spans.setdefault(h["attempt"], []).append(_utc(h["started"]))  # type: ignore[arg-type]
        if h["finished"] is not None and h["status"] in ("applied", "failed"):
            spans[h["attempt"]].append(_utc(h["finished"]))  # type: ignore[arg-type]
    runs = [(a, min(t), max(t)) for a, t in spans.items()]
    return [f"attempt {a} overlaps {b}" for i, (a, s1, e1) in enumerate(runs)
            for b, s2, e2 in runs[i + 1:] if s1 < e2 and s2 < e1]


# -- trials whose fault must land -------------------------------------------------------------


def until_landed(trial: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``trial`` until its fault lands (its result says ``landed``), at most 1 + RERUNS
    times. The result is the last run's, with ``reruns`` counted; whatever a discarded run
    found wrong stays among its problems (a fault that missed excuses no inconsistency)."""
    discarded: list[dict[str, Any]] = []
    result = trial()
    while not result["landed"] and len(discarded) < RERUNS:
        discarded.append(result)
        result = trial()
    result["reruns"] = len(discarded)
    result["problems"] = [f"discarded run {n} ({d['fault']}): {problem}"
                          for n, d in enumerate(discarded, 1)
                          for problem in d["problems"] + d["leaks"]] + result["problems"]
    return result


def failures(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per failed trial: its fault did not land, or it found something wrong."""
    found = []
    for r in results:
        wrong = r["problems"] + [f"password printed: {line}" for line in r["leaks"]]
        if not r["landed"]:
            wrong.insert(0, f"the fault did not land in {1 + r.get('reruns', 0)} run(s)")
        if wrong:
            found.append(f"{r['fault']}: {'; '.join(wrong)}")
    return found


def tally(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """A scenario's counts for the report: trials, faults landed, not landed (each a
    failure), re-runs of trials whose fault missed, and failures."""
    landed = sum(bool(r["landed"]) for r in results)
    return {"trials": len(results), "landed": landed, "not_landed": len(results) - landed,
            "reruns": sum(r.get("reruns", 0) for r in results),
            "failures": len(failures(results))}


# -- secrets ---------------------------------------------------------------------------------


def leaks(secret: str, texts: Sequence[str]) -> list[str]:
    """Lines of ``texts`` that contain ``secret``."""
    pattern = re.compile(re.escape(secret))
    return [line for text in texts for line in text.splitlines() if pattern.search(line)]


# -- figures ----------------------------------------------------------------------------------


def record(scenario: str, data: dict[str, Any]) -> None:
    """Write one scenario's figures to $HERD_FAULTS_RESULTS/<scenario>.json (if set)."""
    folder = os.environ.get("HERD_FAULTS_RESULTS")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    data = {"scenario": scenario, "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
            **data}
    (path / f"{scenario}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
