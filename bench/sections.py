"""The measurements. Each function runs one part on one backend and returns plain data
(seconds, counts) for ``latest.json``; :mod:`bench.report` turns it into tables.

* :func:`herd_start` (report sections 1, 2 and 5): N processes released at once on a fresh
  database, for herd, plain ``alembic upgrade head`` and yoyo-migrations, plus herd on a
  database that is already current; trials interleaved tool by tool so that load on the
  machine hits all alike. :func:`overhead`, :func:`wakeup` and :func:`connections` derive
  the coordination overhead, the wake-up latencies and the peak connections from them.
* :func:`idle_cost` (section 3): whole-process wall time of ``herd migrate`` / ``herd check``
  vs ``alembic upgrade head`` / ``alembic current`` on a current database, and
  :func:`readiness`, the readiness probe's cost per call.
* :func:`per_migration` (section 4): a long chain applied by herd vs plain Alembic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from . import projects, release
from .backends import Backend, render
from .stats import median, ratio, summary

TOOLS = ("herd", "herd_current", "alembic", "yoyo")
OP_OF = {"herd": "herd", "herd_current": "herd", "alembic": "alembic", "yoyo": "yoyo"}

Log = Callable[[str], None]


def yoyo_available() -> bool:
    try:
        import yoyo  # noqa: F401
    except ImportError:
        return False
    return True


# -- 1. herd start ---------------------------------------------------------------------------


def herd_start(backend: Backend, ns: list[int], trials: Callable[[int], int], tmp: Path,
               log: Log) -> dict[str, Any]:
    """Every tool at every N, ``trials(N)`` times, interleaved; raw trials plus summaries."""
    tools = [t for t in TOOLS if t != "yoyo" or yoyo_available()]
    yoyo_dir = projects.write_yoyo_set(backend.name, tmp / f"yoyo-{backend.name}")
    current = backend.create()
    try:
        setup = release.release(1, "herd", _spec(backend, current, yoyo_dir))
        if setup.failures:
            raise RuntimeError(f"could not migrate the 'current' database: "
                               f"{setup.children[0].error}")
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for n in ns:
            per_tool: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
            raw[str(n)] = per_tool
            for k in range(trials(n)):
                for tool in tools:
                    record = _one_trial(backend, tool, n, current, yoyo_dir)
                    per_tool[tool].append(record)
                    log(f"{backend.name} N={n} {tool} trial {k + 1}/{trials(n)}: last done "
                        f"{record['last_done']:.3f} s, {record['failures']} failed"
                        + (f", {record['seeded_rows']} data row(s)"
                           if record.get("seeded_rows") is not None else ""))
    finally:
        backend.drop(current)
    return {"tools": tools, "trials": raw, "summary": _summarize(raw)}


def _spec(backend: Backend, url: URL, yoyo_dir: Path) -> dict[str, Any]:
    return {"ini": str(projects.HERDSET_INI), "url": render(url), "yoyo_dir": str(yoyo_dir),
            "yoyo_uri": backend.yoyo_uri(url)}


def _one_trial(backend: Backend, tool: str, n: int, current: URL,
               yoyo_dir: Path) -> dict[str, Any]:
    fresh = tool != "herd_current"
    url = backend.create() if fresh else current
    try:
        sample = url if backend.name == "postgresql" else None
        trial = release.release(n, OP_OF[tool], _spec(backend, url, yoyo_dir), sample=sample)
        record: dict[str, Any] = {
            "last_done": trial.last_done,
            "last_ready": max((c.end for c in trial.children if c.ok), default=None),
            "failures": trial.failures,
            "errors": dict(Counter(c.error_type for c in trial.children if not c.ok)),
            "first_errors": sorted({c.error for c in trial.children if c.error})[:3],
            "actions": dict(Counter(c.action or "failed" for c in trial.children)),
            "connections": trial.connections,
            # CPU seconds the processes used after the release: all of them, the median one
            "cpu_total": sum(c.cpu or 0.0 for c in trial.children),
            "cpu_median": median([c.cpu for c in trial.children if c.cpu is not None]),
            # SQLAlchemy statements and new connections per process (herd and Alembic)
            "statements_median": median([c.events["statements"] for c in trial.children
                                         if "statements" in c.events]),
            "connections_median": median([c.events["connections"] for c in trial.children
                                          if "connections" in c.events]),
        }
        if record["last_ready"] is not None:
            record["last_ready"] -= trial.released
        if fresh:
            record.update(_correctness(backend, tool, url))
        record.update(_wakeups(trial, tool))
        return record
    finally:
        if fresh:
            backend.drop(url)


def _correctness(backend: Backend, tool: str, url: URL) -> dict[str, Any]:
    rows = backend.query(url, projects.SEEDED_SQL)
    seeded = int(rows[0][0]) if rows else None
    if tool == "yoyo":
        applied = backend.query(url, "SELECT count(*) FROM _yoyo_migration")
        at_head = bool(applied) and int(applied[0][0]) == 4
    else:
        heads = backend.query(url, "SELECT version_num FROM alembic_version")
        at_head = heads == [("d4",)]
    return {"seeded_rows": seeded, "at_head": at_head,
            "duplicates": max(0, (seeded or 0) - 1)}


def _wakeups(trial: release.Trial, tool: str) -> dict[str, Any]:
    """Seconds from the leader's lock release to each waiter's return."""
    if tool not in ("herd", "yoyo"):
        return {}
    leader = trial.leader()
    if leader is None or "released" not in leader.events:
        return {}
    released = leader.events["released"]
    waiter_action = "waited" if tool == "herd" else "nothing"
    waiters = [c for c in trial.children
               if c.ok and c.action == waiter_action and c is not leader]
    out: dict[str, Any] = {
        "wakeups": [c.end - released for c in waiters],
        "leader_done": leader.end - trial.released,
    }
    if tool == "herd":
        out["waiter_polls"] = [int(c.events.get("polls", 0)) for c in waiters]
        out["waiter_statements"] = [int(c.events.get("statements", 0)) for c in waiters]
        out["waiter_seconds"] = [c.seconds for c in waiters]
        out["leader_statements"] = int(leader.events.get("statements", 0))
        out["leader_cpu"] = leader.cpu
        out["waiter_cpu"] = [c.cpu for c in waiters if c.cpu is not None]
    if "migrated" in leader.events:
        out["release_after_migrated"] = released - leader.events["migrated"]
    if "committed" in leader.events:  # the migration's commit: what the waiters watch for
        out["wakeups_from_commit"] = [c.end - leader.events["committed"] for c in waiters]
        out["release_after_commit"] = released - leader.events["committed"]
    return out


def _summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, per_tool in raw.items():
        out[n] = {}
        for tool, records in per_tool.items():
            if not records:
                continue
            seeded = [r.get("seeded_rows") for r in records if "seeded_rows" in r]
            out[n][tool] = {
                "trials": len(records),
                "last_done_median": median([r["last_done"] for r in records]),
                "last_done_max": max(r["last_done"] for r in records),
                "failures": sum(r["failures"] for r in records),
                "processes": len(records) * int(n),
                "trials_with_failures": sum(1 for r in records if r["failures"]),
                "errors": dict(sum((Counter(r["errors"]) for r in records), Counter())),
                "duplicates": sum(r.get("duplicates", 0) for r in records),
                "max_seeded_rows": max((s for s in seeded if s is not None), default=None),
                "missing_row_trials": sum(1 for s in seeded if not s),
                "not_at_head_trials": sum(1 for r in records if r.get("at_head") is False),
                "peak_connections": _peak(records),
                "cpu_total_median": median([r["cpu_total"] for r in records
                                            if r.get("cpu_total") is not None]),
                "cpu_per_process_median": median([r["cpu_median"] for r in records
                                                  if r.get("cpu_median") is not None]),
                "statements_per_process_median": median(
                    [r["statements_median"] for r in records
                     if r.get("statements_median") is not None]),
                "connections_per_process_median": median(
                    [r["connections_median"] for r in records
                     if r.get("connections_median") is not None]),
            }
    return out


def _peak(records: list[dict[str, Any]]) -> dict[str, int] | None:
    samples = [r["connections"] for r in records if r.get("connections")]
    if not samples:
        return None
    return {k: max(s[k] for s in samples) for k in samples[0] if k != "samples"}


def overhead(start: dict[str, Any]) -> dict[str, Any]:
    """herd on a fresh database minus herd on a current one (same N), and that difference
    as a multiple of one plain migration (N=1 ``alembic upgrade head``, fresh database).

    Differences and ratios are *paired*: trial k of one tool against trial k of the other
    (they ran back to back, so they saw the same load), then the median over k.
    """
    summary_ = start["summary"]
    single = summary_.get("1", {}).get("alembic", {}).get("last_done_median")
    out: dict[str, Any] = {"single_migration": single, "by_n": {}}
    for n, per_tool in start["trials"].items():
        tools = summary_[n]
        fresh = tools.get("herd", {}).get("last_done_median")
        current = tools.get("herd_current", {}).get("last_done_median")
        if fresh is None or current is None:
            continue
        diff = paired(per_tool, "herd", "herd_current", lambda a, b: a - b)
        out["by_n"][n] = {
            "herd_fresh": fresh, "herd_current": current, "difference": diff,
            "ratio_to_single_migration": ratio(diff, single),
            "herd_vs_alembic": paired(per_tool, "herd", "alembic", ratio),
            "herd_vs_yoyo": paired(per_tool, "herd", "yoyo", ratio),
            "cpu_total": {tool: tools[tool].get("cpu_total_median") for tool in tools},
            "cpu_per_process": {tool: tools[tool].get("cpu_per_process_median")
                                for tool in tools},
        }
    return out


def paired(per_tool: dict[str, list[dict[str, Any]]], a: str, b: str,
           combine: Callable[[float, float], float | None]) -> float | None:
    """Median over trials k of ``combine(a_k, b_k)`` on the trials' ``last_done``."""
    values = [combine(x["last_done"], y["last_done"])
              for x, y in zip(per_tool.get(a, []), per_tool.get(b, []), strict=False)]
    return median([v for v in values if v is not None])


def wakeup(start: dict[str, Any]) -> dict[str, Any]:
    """Wake-up latency per N and tool, pooled over the trials."""
    out: dict[str, Any] = {}
    for n, per_tool in start["trials"].items():
        for tool in ("herd", "yoyo"):
            records = per_tool.get(tool, [])
            values = [w for r in records for w in r.get("wakeups", [])]
            if not values:
                continue
            entry = summary(values)
            gaps = [r["release_after_migrated"] for r in records
                    if "release_after_migrated" in r]
            if gaps:
                entry["release_after_migrated_median"] = median(gaps)
            from_commit = [w for r in records for w in r.get("wakeups_from_commit", [])]
            if from_commit:
                entry["from_commit"] = summary(from_commit)
                entry["release_after_commit_median"] = median(
                    [r["release_after_commit"] for r in records if "release_after_commit" in r])
            entry["leader_done_median"] = median([r["leader_done"] for r in records
                                                  if "leader_done" in r])
            polls = [p for r in records for p in r.get("waiter_polls", [])]
            if polls:
                statements = [q for r in records for q in r.get("waiter_statements", [])]
                seconds = [t for r in records for t in r.get("waiter_seconds", [])]
                entry["polls_per_waiter_median"] = median(polls)
                entry["statements_per_waiter_median"] = median(statements)
                entry["statements_per_poll"] = ratio(sum(statements), sum(polls))
                # what N waiters cost the database per second while they wait
                entry["waiter_statements_per_second"] = ratio(sum(statements), sum(seconds))
                entry["leader_statements_median"] = median(
                    [r["leader_statements"] for r in records if "leader_statements" in r])
                entry["leader_cpu_median"] = median(
                    [r["leader_cpu"] for r in records if r.get("leader_cpu") is not None])
                entry["waiter_cpu_median"] = median(
                    [c for r in records for c in r.get("waiter_cpu", [])])
            out.setdefault(n, {})[tool] = entry
    return out


def connections(start: dict[str, Any]) -> dict[str, Any]:
    return {n: {tool: s["peak_connections"] for tool, s in tools.items()
                if s.get("peak_connections")}
            for n, tools in start["summary"].items()}


# -- 2. cost when nothing is pending ---------------------------------------------------------


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def idle_cost(backend: Backend, sizes: list[int], reps: int, tmp: Path,
              log: Log) -> dict[str, Any]:
    """Whole-process wall time on a current database, median of ``reps`` interleaved runs."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "HERD_DATABASE_URL", "ALEMBIC_CONFIG")}
    out: dict[str, Any] = {}
    for size in sizes:
        url = backend.create()
        try:
            folder = tmp / f"idle-{backend.name}-{size}"
            ini = str(projects.write_chain(folder, size, url))
            # set up by herd, so that herd's tables exist and the warm-up round's `herd
            # migrate` writes the fast lane's stamp: the measured rounds take the lane, as
            # every restart of a herd-managed database does
            setup = release.release(1, "herd", {"ini": ini, "url": render(url)})
            if setup.failures:
                raise RuntimeError(f"setup of {size} revisions failed: "
                                   f"{setup.children[0].error}")
            commands = {
                "herd migrate": [_bin("herd"), "migrate", "-c", ini],
                "alembic upgrade head": [_bin("alembic"), "-c", ini, "upgrade", "head"],
                "herd check": [_bin("herd"), "check", "-c", ini],
                "alembic current": [_bin("alembic"), "-c", ini, "current"],
                "herd run -- true": [_bin("herd"), "run", "-c", ini, "--", "true"],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            cpus: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(1):  # warm-up: bytecode caches, the server's catalog caches
                for argv in commands.values():
                    _timed(argv, env, folder)
            for _ in range(max(reps, CPU_RUNS)):  # CPU over 10 runs at least (issue 17)
                for name, argv in commands.items():
                    wall, cpu = _timed_cpu(argv, env, folder)
                    times[name].append(wall)
                    cpus[name].append(cpu)
            entry: dict[str, Any] = {name: {"median": median(v), "runs": v,
                                            "cpu_median": median(cpus[name]),
                                            "cpu_mean": sum(cpus[name]) / len(cpus[name]),
                                            "cpu_runs": cpus[name]}
                                     for name, v in times.items()}
            entry["ratios"] = {  # paired: run k against run k, median over k
                "herd migrate / alembic upgrade head": median(
                    [h / a for h, a in zip(times["herd migrate"], times["alembic upgrade head"],
                                           strict=True)]),
                "herd check / alembic current": median(
                    [h / a for h, a in zip(times["herd check"], times["alembic current"],
                                           strict=True)]),
            }
            out[str(size)] = entry
            log(f"{backend.name} idle cost, {size} revisions: " + ", ".join(
                f"{name} {entry[name]['median']:.3f} s" for name in commands))
            if size == max(sizes):
                out["readiness"] = readiness(ini, url, log, backend.name)
        finally:
            backend.drop(url)
    return out


CPU_RUNS = 10


def _timed_cpu(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU (user + sys, from ``wait4``) of one whole process."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err[-300:]!r}")
    return took, usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-300:]}")
    return took


def interpreter_baseline(reps: int) -> dict[str, Any]:
    """What every whole-process figure includes: the interpreter and the imports."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import alembic.config": [sys.executable, "-c", "import alembic.config"],
        "import alembic_herd.cli": [sys.executable, "-c", "import alembic_herd.cli"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():
        _timed(argv, dict(os.environ), Path.cwd())
    for _ in range(reps):
        for name, argv in commands.items():
            times[name].append(_timed(argv, dict(os.environ), Path.cwd()))
    return {name: {"median": median(v), "runs": v} for name, v in times.items()}


# -- 3. readiness probe ----------------------------------------------------------------------

PROBE_CALLS = 200


def _op_readiness(spec: dict[str, Any], data: dict[str, float]) -> dict[str, Any]:
    """In a fresh child: build the probe once, then time many probes; also time
    ``alembic_herd.status()`` and a bare ``SELECT version_num`` on an open connection."""
    import sqlalchemy as sa

    import alembic_herd

    calls = int(spec["calls"])
    try:
        from alembic_herd.integrations.readiness import ReadinessProbe
    except ImportError:
        ReadinessProbe = None
    if ReadinessProbe is not None:
        began = time.perf_counter()
        probe = ReadinessProbe(spec["ini"], url=spec["url"])
        data["probe_construct"] = time.perf_counter() - began
        first = time.perf_counter()
        if not probe.is_ready(probe.probe()):
            raise RuntimeError("the readiness probe says not ready on a current database")
        data["probe_first"] = time.perf_counter() - first
        samples = []
        for _ in range(calls):
            began = time.perf_counter()
            probe.probe()
            samples.append(time.perf_counter() - began)
        probe.close()
        data.update({f"probe_{k}": v for k, v in summary(samples).items() if v is not None})
    status_calls = max(3, calls // 20)
    samples = []
    for _ in range(status_calls):
        began = time.perf_counter()
        alembic_herd.status(spec["ini"], url=spec["url"])
        samples.append(time.perf_counter() - began)
    data.update({f"status_{k}": v for k, v in summary(samples).items() if v is not None})
    # the two parts of loading a project: herd's offline run of env.py (which learns the
    # version table; no revision files are read) and Alembic reading every revision file
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from alembic_herd._environment import load_environment

    for prefix, call in (
        ("envprobe", lambda: load_environment(spec["ini"], url=spec["url"])),
        ("scripts", lambda: ScriptDirectory.from_config(Config(spec["ini"])).get_heads()),
    ):
        samples = []
        for _ in range(status_calls):
            began = time.perf_counter()
            call()
            samples.append(time.perf_counter() - began)
        data.update({f"{prefix}_{k}": v for k, v in summary(samples).items() if v is not None})
    engine = sa.create_engine(spec["url"], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        samples = []
        for _ in range(calls):
            began = time.perf_counter()
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            samples.append(time.perf_counter() - began)
    engine.dispose()
    data.update({f"select_{k}": v for k, v in summary(samples).items() if v is not None})
    return {"action": "measured", "exit_code": 0}


release.OPS["readiness"] = _op_readiness


def readiness(ini: str, url: URL, log: Log, name: str, calls: int = PROBE_CALLS) -> dict[str, Any]:
    trial = release.release(1, "readiness", {"ini": ini, "url": render(url), "calls": calls})
    child = trial.children[0]
    if not child.ok:
        return {"error": child.error}
    data = dict(child.events)
    out: dict[str, Any] = {"calls": calls, "available": "probe_p50" in data}
    for prefix in ("probe", "status", "select", "envprobe", "scripts"):
        values = {k[len(prefix) + 1:]: v for k, v in data.items() if k.startswith(prefix + "_")}
        if values:
            out[prefix] = values
    if out["available"]:
        log(f"{name} readiness probe: p50 {data['probe_p50'] * 1000:.2f} ms per call "
            f"(built in {data['probe_construct'] * 1000:.0f} ms); status() "
            f"{data['status_p50'] * 1000:.1f} ms; bare SELECT {data['select_p50'] * 1000:.2f} ms")
    return out


# -- 4. per-migration overhead ---------------------------------------------------------------


def per_migration(backend: Backend, count: int, reps: int, tmp: Path,
                  log: Log) -> dict[str, Any]:
    """A chain of ``count`` revisions on a fresh database: herd vs plain Alembic, in a
    fresh process each (the time inside the process, from the call to its return)."""
    ini = str(projects.write_chain(tmp / f"chain-{backend.name}-{count}", count))
    times: dict[str, list[float]] = {"herd": [], "alembic": []}
    if backend.name == "postgresql":
        # herd again, its connections with synchronous_commit=off: how much of the
        # difference is waiting for durable commits of the attempt log
        times["herd_async_commit"] = []
    cpu: dict[str, list[float]] = {tool: [] for tool in times}
    for _ in range(reps):
        for tool, runs in times.items():
            url = backend.create()
            spec = {"ini": ini, "url": render(url)}
            if tool == "herd_async_commit":
                spec["pgoptions"] = "-c synchronous_commit=off"
            try:
                trial = release.release(1, tool.split("_")[0], spec)
                child = trial.children[0]
                if not child.ok:
                    raise RuntimeError(f"{tool} on {count} revisions failed: {child.error}")
                runs.append(child.seconds)
                if child.cpu is not None:
                    cpu[tool].append(child.cpu)
            finally:
                backend.drop(url)
    profile = {}
    for tool in ("herd", "alembic"):  # one more run each, every statement timed
        url = backend.create()
        try:
            trial = release.release(1, "profile", {"ini": ini, "url": render(url),
                                                   "tool": tool})
            child = trial.children[0]
            if child.ok:
                profile[tool] = _categories(child.events)
        finally:
            backend.drop(url)
    pairs = list(zip(times["herd"], times["alembic"], strict=True))
    extra = median([h - a for h, a in pairs])
    out: dict[str, Any] = {
        "revisions": count,
        **{tool: {"median": median(runs), "runs": runs, "cpu_median": median(cpu[tool])}
           for tool, runs in times.items()},
        # paired: run k of herd against run k of Alembic (back to back), median over k
        "ratio": median([h / a for h, a in pairs]),
        "extra_per_revision": extra / count if extra is not None else None,
        "profile": profile,
    }
    if "herd_async_commit" in times:
        async_extra = median([h - a for h, a in zip(times["herd_async_commit"],
                                                    times["alembic"], strict=True)])
        out["extra_per_revision_async_commit"] = (async_extra / count
                                                  if async_extra is not None else None)
    log(f"{backend.name} {count} revisions: herd {out['herd']['median']:.3f} s, alembic "
        f"{out['alembic']['median']:.3f} s, paired ratio {out['ratio']:.2f}")
    return out


def _categories(events: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in events.items():
        name, _, what = key.partition("|")
        out.setdefault(name, {})[what] = value
    return out
