"""Release N real processes at once (a barrier) and collect what each did.

The pattern of ``tests/herd_harness.py``, made cheap enough to repeat with N = 64 on two
cores: instead of starting N interpreters (each importing SQLAlchemy, Alembic and the
drivers, about half a second of CPU apiece), the parent imports everything once and
``fork()``s N children. Each child closes its copy of the barrier pipe's write end, says
it is ready, and blocks reading the barrier pipe; when every child is ready the parent
closes the last write end and every child's ``read()`` returns at the same moment. From
there each child is an ordinary, separate process with its own database connections and
its own (cold) Alembic and herd state: it loads the migration scripts, runs env.py and
connects after the release, exactly as a replica does after its imports.

Times are ``time.time()`` (one machine, one clock): the parent's release moment, each
child's start and end, and events inside the children (herd's ``migrated`` log event and
the moment its lock is released; the moment a yoyo process deletes its lock row).

While the children run, a thread in the parent can sample ``pg_stat_activity`` every
20 ms and keep the peak number of connections to the database, by kind (herd's own
connections are named ``herd ...``; the benchmark env.py names Alembic's
``bench alembic env.py``; yoyo's get ``bench-yoyo`` through ``PGAPPNAME``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Everything is imported before forking, so that no child pays for imports after the
# release (a replica imports its code before it migrates, too).
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

import alembic_herd
import alembic_herd._runner
import alembic_herd.cli
from alembic_herd.demo import replica

with contextlib.suppress(ImportError):
    import sqlalchemy.dialects.postgresql.psycopg
with contextlib.suppress(ImportError):
    import sqlalchemy.dialects.mysql.pymysql


def _import_everything() -> None:
    """Import every herd module now: children then never read herd's source from disk, so
    an edit of the working tree during a run cannot mix two versions in one process."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(alembic_herd.__path__, "alembic_herd."):
        if info.name.startswith(("alembic_herd.demo", "alembic_herd.integrations.")) and \
                info.name != "alembic_herd.integrations.readiness":
            continue
        with contextlib.suppress(ImportError):
            importlib.import_module(info.name)


_import_everything()

SAMPLE_EVERY = 0.02
DEFAULT_TIMEOUT = 300.0


@dataclass
class ChildResult:
    """What one released process did."""

    ok: bool
    start: float
    end: float
    action: str | None = None  # herd: migrated | waited | current; yoyo: applied | nothing
    error: str | None = None
    error_type: str | None = None
    events: dict[str, float] = field(default_factory=dict)
    cpu: float | None = None  # CPU seconds this process used after the release

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Trial:
    """One release of ``n`` processes."""

    n: int
    released: float
    children: list[ChildResult]
    connections: dict[str, int] | None = None

    @property
    def last_done(self) -> float:
        """Seconds from the release until the last process finished (ready or failed)."""
        return max(c.end for c in self.children) - self.released

    @property
    def failures(self) -> int:
        return sum(1 for c in self.children if not c.ok)

    def leader(self) -> ChildResult | None:
        for c in self.children:
            if c.action in ("migrated", "applied"):
                return c
        return None


# -- what a child does ------------------------------------------------------------------------


def _count_sql(events: dict[str, float]) -> None:
    """Count this process's SQL statements and new database connections."""
    events["statements"] = 0
    events["connections"] = 0

    def statement(*_args: Any) -> None:
        events["statements"] += 1

    def connection(*_args: Any) -> None:
        events["connections"] += 1

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", statement)
    sa.event.listen(sa.pool.Pool, "connect", connection)


def _lock_classes() -> set[type]:
    """Every lock backend's class (anything in alembic_herd.locks.* with the protocol)."""
    import importlib
    import pkgutil

    import alembic_herd.locks as package

    found: set[type] = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == module.__name__
                    and callable(getattr(value, "try_acquire", None))
                    and callable(getattr(value, "release", None))):
                found.add(value)
    return found


def _capture_herd_events(events: dict[str, float]) -> None:
    """Record the time of herd's log events, of the migration's commit, and of the lock's
    release; count the lock tries (one per polling round) and the SQL statements."""

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            name = getattr(record, "herd_event", None)
            if name and name not in events:
                events[name] = record.created

    def committed(*_args: Any) -> None:  # the migration's commit: the schema is current
        if "migrated" not in events:
            events["committed"] = time.time()

    _count_sql(events)
    events["polls"] = 0
    from alembic_herd import _wakeup

    def woken(self: Any, seconds: float, _original: Any = _wakeup.Wakeup.__call__) -> None:
        # where a waiter's time goes (bench.wake64): when its first pause began (it became
        # a waiter) and whether it listened then, when its last pause began and ended, and
        # when its first notification arrived
        began = time.time()
        events.setdefault("first_pause", began)
        events["pauses"] = events.get("pauses", 0) + 1
        events["last_pause"] = began
        events["last_pause_asked"] = seconds
        _original(self, seconds)  # the first notification: CPU from here to the end is the
        events["last_pause_end"] = time.time()
        events.setdefault("listening", float(self.listening or self.notified))
        if self.notified and "woke_cpu_at" not in events:  # wake-up's cost (_child)
            events["woke_cpu_at"] = time.process_time()
            events["notified_at"] = events["last_pause_end"]

    _wakeup.Wakeup.__call__ = woken  # type: ignore[method-assign]
    _time_gc(events)
    from alembic_herd import _leader

    def notified(conn: Any, key: Any, _original: Any = _wakeup.notify) -> None:
        _original(conn, key)  # the leader's notifications: the first and the last
        events.setdefault("notify_first", time.time())
        events["notify_last"] = time.time()

    _wakeup.notify = notified  # type: ignore[assignment]
    _leader.notify = notified  # type: ignore[attr-defined]
    sa.event.listen(sa.engine.Engine, "commit", committed)
    logger = logging.getLogger("alembic_herd")
    logger.handlers[:] = [Capture()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for cls in _lock_classes():  # the lock protocol: one try per polling round
        def try_acquire(self: Any, _original: Any = cls.try_acquire) -> bool:
            events["polls"] += 1
            return bool(_original(self))

        def release(self: Any, _original: Any = cls.release) -> None:
            _original(self)
            events.setdefault("released", time.time())

        cls.try_acquire = try_acquire  # type: ignore[attr-defined]
        cls.release = release  # type: ignore[attr-defined]


def _time_gc(events: dict[str, float]) -> None:
    """Seconds this process spent in the garbage collector after the release, in all and
    after its first notification; how many full (generation 2) collections it made."""
    import gc

    began = [0.0]
    events["gc_seconds"] = events["gc_after_notify"] = events["gc_full"] = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        events["gc_seconds"] += took
        if "woke_cpu_at" in events:
            events["gc_after_notify"] += took
        if info.get("generation") == 2:
            events["gc_full"] += 1

    gc.callbacks.append(callback)


def _replica(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The shared replica's work (:func:`alembic_herd.demo.replica.act`) on ``spec``."""
    args = replica.parser().parse_args([mode, spec["ini"], spec["url"],
                                        "--timeout", str(DEFAULT_TIMEOUT)])
    return replica.act(args)


def op_herd(spec: dict[str, Any], events: dict[str, float]) -> dict[str, Any]:
    _capture_herd_events(events)
    return _replica("herd", spec)


def op_alembic(spec: dict[str, Any], events: dict[str, float]) -> dict[str, Any]:
    _count_sql(events)
    return _replica("alembic", spec)


def op_yoyo(spec: dict[str, Any], events: dict[str, float]) -> dict[str, Any]:
    """What ``yoyo apply`` does: take yoyo's lock (a row in ``yoyo_lock``, default 10 s
    timeout, polled every 0.5 s), then apply what is not applied yet."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(spec["yoyo_uri"])
    try:
        with backend.lock():
            migrations = backend.to_apply(read_migrations(spec["yoyo_dir"]))
            count = len(migrations)
            backend.apply_migrations(migrations)
        events["released"] = time.time()
    finally:
        backend.connection.close()
    return {"action": "applied" if count else "nothing", "exit_code": 0}


CATEGORIES = [  # (category, substrings of the SQL), first match wins
    ("catalog lookups", ("pg_catalog", "information_schema", "sqlite_master", "pragma",
                         "show ", "select version()", "current_schema", "select database()",
                         "standard_conforming_strings", "lower_case_table_names",
                         "sql_mode", "show variables")),
    ("revision graph", ("herd_revisions",)),
    ("attempt log: write", ("insert into herd_history", "update herd_history")),
    ("attempt log: read", ("from herd_history",)),
    ("attempt log: create", ("herd_history",)),
    ("lock: verify", ("current_setting('application_name')", "is_used_lock", "herd_lock")),
    ("lock: take/release", ("advisory", "get_lock", "release_lock", "set_config")),
    ("heads read", ("select alembic_version.version_num",)),
    ("version table writes", ("alembic_version",)),
]


def categorize(statement: str) -> str:
    text = " ".join(statement.lower().split())
    for name, needles in CATEGORIES:
        if any(needle in text for needle in needles):
            return name
    return "migration DDL/DML and other"


def op_profile(spec: dict[str, Any], events: dict[str, float]) -> dict[str, Any]:
    """Run ``spec['tool']`` (herd or alembic) timing every SQL statement by category."""
    began: dict[int, float] = {}

    def before(_conn: Any, cursor: Any, *_args: Any) -> None:
        began[id(cursor)] = time.perf_counter()

    def after(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        took = time.perf_counter() - began.pop(id(cursor), time.perf_counter())
        name = categorize(statement)
        events[f"{name}|count"] = events.get(f"{name}|count", 0) + 1
        events[f"{name}|seconds"] = events.get(f"{name}|seconds", 0.0) + took

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    start = time.perf_counter()
    report = OPS[spec["tool"]](spec, {})
    events["total|seconds"] = time.perf_counter() - start
    return {**report, "action": "profiled"}


#: what a child does: ``op(spec, events)`` -> a report like the shared replica's
#: (``action``, ``exit_code``, and on failure ``error`` and ``type``)
OPS: dict[str, Callable[[dict[str, Any], dict[str, float]], dict[str, Any]]] = {
    "herd": op_herd,
    "alembic": op_alembic,
    "yoyo": op_yoyo,
    "profile": op_profile,
}


def _child(op: str, spec: dict[str, Any], go: int, out: Path, hold: int = -1) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        log = os.open(out.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ["PGAPPNAME"] = f"bench-{op}"
        if spec.get("pgoptions"):
            os.environ["PGOPTIONS"] = spec["pgoptions"]
        os.read(go, 1)  # the barrier: returns b"" when the parent closes the last writer
        events: dict[str, float] = {}
        start, cpu = time.time(), time.process_time()
        try:
            report = OPS[op](spec, events)
        except Exception as exc:
            traceback.print_exc()
            report = {"error": str(exc), "type": type(exc).__name__, "exit_code": 1}
        code = report["exit_code"]
        if "woke_cpu_at" in events:  # CPU from the first notification to the return
            events["wake_cpu"] = time.process_time() - events.pop("woke_cpu_at")
        result = ChildResult(code == 0, start, time.time(), action=report.get("action"),
                             error=(str(report.get("error") or "").strip().splitlines()
                                    or [""])[0][:300] or None,
                             error_type=report.get("type"), events=events,
                             cpu=time.process_time() - cpu)
        out.write_text(json.dumps(result.__dict__))
        if hold >= 0:  # exit only once every child has returned (release(hold_exits=))
            os.read(hold, 1)
    except BaseException:
        traceback.print_exc()
        code = 99
    finally:
        os._exit(code)


# -- the parent ------------------------------------------------------------------------------


def release(n: int, op: str, spec: dict[str, Any], *, sample: URL | None = None,
            timeout: float = DEFAULT_TIMEOUT, hold_exits: bool = False,
            freeze: bool = False) -> Trial:
    """Fork ``n`` children running ``op`` with ``spec``, release them together, collect.

    ``sample``: a PostgreSQL database URL whose connections are sampled during the trial.
    ``hold_exits``: a child that has returned exits only once all have (the exits of the
    first ones, fork's copy-on-write pages freed, then compete for the CPU with the wake-up
    of the last ones; replicas in their own containers do not share that CPU).
    ``freeze``: ``gc.freeze()`` before forking, as fork-based servers do, so that a
    child's garbage collections do not touch (and copy) the objects it inherited.
    """
    import gc

    workdir = Path(tempfile.mkdtemp(prefix="herd-bench-trial-"))
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe() if hold_exits else (-1, -1)
    pids: dict[int, int] = {}
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        for i in range(n):
            pid = os.fork()
            if pid == 0:  # child
                os.close(go_w)
                os.close(ready_r)
                if hold_w >= 0:
                    os.close(hold_w)
                os.write(ready_w, b"r")
                os.close(ready_w)
                _child(op, spec, go_r, workdir / f"{i}.json", hold_r)
            pids[pid] = i
        os.close(ready_w)
        got = 0
        while got < n:
            chunk = os.read(ready_r, n - got)
            if not chunk:
                raise RuntimeError("a child exited before it was ready")
            got += len(chunk)
        sampler = _Sampler(sample) if sample is not None else None
        if sampler:
            sampler.start()
        released = time.time()
        os.close(go_w)  # the barrier opens
        go_w = -1
        if hold_w >= 0:  # every child has written its result (or died): let them exit
            until = time.monotonic() + timeout
            while (sum(1 for i in pids.values() if (workdir / f"{i}.json").exists()) < n
                   and time.monotonic() < until
                   and not any(os.waitpid(pid, os.WNOHANG)[0] for pid in list(pids))):
                time.sleep(0.005)
            os.close(hold_w)
            hold_w = -1
        _wait(pids, timeout)
        if sampler:
            sampler.stop()
        children = []
        for i in sorted(pids.values()):
            path = workdir / f"{i}.json"
            if path.exists():
                child = ChildResult(**json.loads(path.read_text()))
            else:
                log = workdir / f"{i}.log"
                tail = log.read_text()[-300:] if log.exists() else ""
                child = ChildResult(False, released, time.time(), error=f"no result: {tail}",
                                    error_type="Crashed")
            children.append(child)
        return Trial(n, released, children, sampler.peaks if sampler else None)
    finally:
        if freeze:
            gc.unfreeze()
        for fd in (go_r, go_w, ready_r, hold_r, hold_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


def _wait(pids: dict[int, int], timeout: float) -> None:
    """Reap the children (our own pids only); kill those still running at the deadline."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left:
        for pid in list(left):
            if os.waitpid(pid, os.WNOHANG)[0]:
                left.discard(pid)
        if left and time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        if left:
            time.sleep(0.005)


class _Sampler(threading.Thread):
    """Samples ``pg_stat_activity`` for one database every 20 ms; keeps the peaks."""

    def __init__(self, url: URL) -> None:
        super().__init__(daemon=True)
        self.database = url.database
        self.engine = sa.create_engine(url.set(database="postgres"), poolclass=NullPool,
                                       isolation_level="AUTOCOMMIT",
                                       connect_args={"application_name": "bench sampler"})
        self.conn = self.engine.connect()
        self.halt = threading.Event()
        self.peaks: dict[str, int] = {"total": 0, "herd": 0, "alembic": 0, "yoyo": 0,
                                      "other": 0, "samples": 0}

    def run(self) -> None:
        query = sa.text("SELECT application_name FROM pg_stat_activity WHERE datname = :d")
        while not self.halt.is_set():
            names = self.conn.execute(query, {"d": self.database}).scalars().all()
            kinds = {"herd": 0, "alembic": 0, "yoyo": 0, "other": 0}
            for name in names:
                kinds[_kind(name or "")] += 1
            self.peaks["total"] = max(self.peaks["total"], len(names))
            for kind, count in kinds.items():
                self.peaks[kind] = max(self.peaks[kind], count)
            self.peaks["samples"] += 1
            self.halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.conn.close()
        self.engine.dispose()


def _kind(application_name: str) -> str:
    if application_name.startswith("herd"):
        return "herd"
    if application_name == "bench alembic env.py":
        return "alembic"
    if application_name.startswith("bench-yoyo"):
        return "yoyo"
    return "other"
