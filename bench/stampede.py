"""Whole processes released at once on a fresh PostgreSQL database (issue 17, point 5).

What a container platform sees when N replicas start together: N real command-line
processes (``herd migrate``, ``yoyo apply``, ``node-pg-migrate up``), each a fresh
interpreter that imports, connects, coordinates and exits. Every process is started
under ``flock -s`` on a file this harness holds exclusively; once all N are blocked on
it, the harness releases the file and all N start the tool at the same moment.

Measured per trial: time from the release to the last process's exit (the harness's
clock, ``os.wait4``), each process's CPU (user + sys from ``wait4``'s rusage, which adds
the tool's own process to its ``flock`` parent's), nonzero exits, and afterwards in the
database: the tool's own record of applied revisions and the data row that a revision
inserts (two rows = a revision applied twice).

The peers, each with a built-in lock, on the same four changes as ``bench/project``:

* yoyo-migrations (Python): ``yoyo apply --batch``; a lock row in ``yoyo_lock``, retried
  every 0.5 s;
* node-pg-migrate (Node.js, ``bench/node``; ``make bench`` installs it with ``npm ci``):
  ``up --advisory-lock-mode wait``, a blocking ``pg_advisory_lock``.

::

    python -m bench.stampede --url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        [-n 8,32] [--trials 3]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from . import projects
from .backends import Backend
from .sections import yoyo_available
from .stats import median, percentile

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
NODE_BIN = NODE_DIR / "node_modules" / ".bin" / "node-pg-migrate"
TOOLS = ("herd", "yoyo", "node-pg-migrate")
TIMEOUT = 300.0
# the data row inserted by the third revision, as each tool's migration set spells it
SEEDED_SQL = projects.SEEDED_SQL
APPLIED_SQL = {
    "herd": "SELECT count(*) FROM alembic_version WHERE version_num = 'd4'",
    "yoyo": "SELECT count(*) FROM _yoyo_migration",
    "node-pg-migrate": "SELECT count(*) FROM pgmigrations",
}
APPLIED_WANTED = {"herd": 1, "yoyo": 4, "node-pg-migrate": 4}
# what the migrating process prints (the others print nothing of it)
LEADER_MARK = {"herd": "migrated 4 revision", "yoyo": None,
               "node-pg-migrate": "MIGRATION 0004_index"}


def node_available() -> str | None:
    """``None`` when node-pg-migrate can run here, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_BIN.exists():
        return "node-pg-migrate is not installed (make bench runs npm ci in bench/node)"
    return None


def tools_here() -> tuple[list[str], dict[str, str]]:
    """The tools that can run here, and why the others cannot."""
    skipped = {}
    why = node_available()
    if why:
        skipped["node-pg-migrate"] = why
    if not yoyo_available():
        skipped["yoyo"] = "yoyo-migrations is not installed (pip install -e '.[bench]')"
    return [t for t in TOOLS if t not in skipped], skipped


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def write_projects(folder: Path, yoyo_dir: Path) -> dict[str, Path]:
    """The four changes for each tool: herd's Alembic project (a copy of bench/project, its
    URL given on the command line), yoyo's steps, node-pg-migrate's SQL files."""
    herd = folder / "herd"
    shutil.copytree(projects.HERDSET, herd, ignore=shutil.ignore_patterns("__pycache__"))
    node = folder / "node"
    node.mkdir(parents=True)
    for name, statements in projects.yoyo_steps("postgresql"):
        (node / f"{name}.sql").write_text("-- Up Migration\n" + ";\n".join(statements) + ";\n")
    return {"herd": herd / "alembic.ini", "yoyo": yoyo_dir, "node-pg-migrate": node}


def command(tool: str, url: URL, where: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of one replica of ``tool`` on ``url``."""
    rendered = url.render_as_string(hide_password=False)
    if tool == "herd":
        return [_bin("herd"), "migrate", "-c", str(where["herd"]), "--url", rendered], {}
    if tool == "yoyo":
        uri = Backend("postgresql", "", "", url, Path()).yoyo_uri(url)
        return [_bin("yoyo"), "apply", "--batch", "--no-config-file", "--database", uri,
                str(where["yoyo"])], {}
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return [str(NODE_BIN), "up", "--migrations-dir", str(where["node-pg-migrate"]),
            "--advisory-lock-mode", "wait", "--no-check-order"], {"DATABASE_URL": plain}


def _blocked(pid: int) -> bool:
    """Whether ``flock`` (pid) is asleep (waiting for the barrier file)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
    except (OSError, IndexError):
        return False


def release(n: int, argv: list[str], env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Start ``n`` processes of ``argv`` behind one barrier, release them, wait for all.

    One thread watches every process: its exit (a pidfd) and its output (a pipe), each
    event stamped on arrival. So the exit tax (from the last output to the exit) is not
    inflated by reaping threads queueing for the GIL."""
    barrier = workdir / "barrier"
    barrier.touch()
    holder = os.open(barrier, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "HERD_DATABASE_URL", "ALEMBIC_CONFIG")} | env
    procs: list[subprocess.Popen[bytes]] = []
    exits: dict[int, tuple[float, int, float]] = {}
    outputs: dict[int, bytearray] = {}
    last: dict[int, float] = {}
    try:
        for _ in range(n):
            proc = subprocess.Popen(["flock", "-s", str(barrier), *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, cwd=workdir)
            procs.append(proc)
        until = time.monotonic() + 30
        while not all(_blocked(p.pid) for p in procs) and time.monotonic() < until:
            time.sleep(0.02)
        time.sleep(0.2)  # every flock is in its flock(2) call, not only asleep on its way
        poller = select.poll()
        watched: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.fileno()
            os.set_blocking(out, False)
            outputs[proc.pid] = bytearray()
            pidfd = os.pidfd_open(proc.pid)
            for fd, kind in ((out, "out"), (pidfd, "exit")):
                poller.register(fd, select.POLLIN | select.POLLHUP)
                watched[fd] = (kind, proc)
        released = time.monotonic()
        fcntl.flock(holder, fcntl.LOCK_UN)
        deadline = released + TIMEOUT
        while watched and time.monotonic() < deadline:
            for fd, _event in poller.poll(1000):
                now = time.monotonic()
                kind, proc = watched[fd]
                if kind == "out":
                    data = os.read(fd, 65536)
                    if data:
                        outputs[proc.pid] += data
                        last[proc.pid] = now
                        continue
                else:
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    exits[proc.pid] = (now, proc.returncode, usage.ru_utime + usage.ru_stime)
                    os.close(fd)
                poller.unregister(fd)
                del watched[fd]
    finally:
        os.close(holder)
        for proc in procs:
            if proc.pid not in exits:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    children = []
    for proc in procs:
        end, code, cpu = exits.get(proc.pid, (float("nan"), -9, float("nan")))
        # the exit tax: from the last output the process wrote to its exit (flock's, right
        # after its child's)
        tax = end - last[proc.pid] if proc.pid in last and proc.pid in exits else None
        children.append({"seconds": end - released, "exit": code, "cpu": cpu,
                         "exit_tax": tax,
                         "output": outputs[proc.pid].decode(errors="replace")[-2000:]})
    return {"released": released, "children": children}


def trial(tool: str, n: int, backend: Backend, where: dict[str, Path], workdir: Path, *,
          url: URL | None = None) -> dict[str, Any]:
    """One release of ``n`` processes of ``tool`` on a fresh database (or on ``url``, which
    is dropped afterwards too), then its checks."""
    url = url or backend.create()
    query = backend.query
    try:
        argv, env = command(tool, url, where)
        run = release(n, argv, env, workdir)
        children = run["children"]
        mark = LEADER_MARK[tool]
        leaders = [i for i, c in enumerate(children) if mark and mark in c["output"]]
        failed = [c for c in children if c["exit"] != 0]
        applied = query(url, APPLIED_SQL[tool])
        seeded = query(url, SEEDED_SQL)
        record: dict[str, Any] = {
            "n": n,
            "all_exited": max(c["seconds"] for c in children),
            "exit_seconds": sorted(c["seconds"] for c in children),
            "cpu": [c["cpu"] for c in children],
            "cpu_total": sum(c["cpu"] for c in children),
            "cpu_median": median([c["cpu"] for c in children]),
            "exit_tax": [c["exit_tax"] for c in children if c["exit_tax"] is not None],
            "failures": len(failed),
            "first_error": (failed[0]["output"].strip().splitlines() or [""])[-1][:300]
            if failed else None,
            "applied": int(applied[0][0]) if applied else None,
            "seeded_rows": int(seeded[0][0]) if seeded else None,
        }
        record["correct"] = (record["applied"] == APPLIED_WANTED[tool]
                             and record["seeded_rows"] == 1)
        if len(leaders) == 1:  # the others only waited: what a waiting replica's life costs
            waiters = [c["cpu"] for i, c in enumerate(children) if i != leaders[0]]
            record["leader_cpu"] = children[leaders[0]]["cpu"]
            record["waiter_cpu_median"] = median(waiters)
            record["waiter_cpu_max"] = max(waiters) if waiters else None
        return record
    finally:
        for path in workdir.iterdir():
            path.unlink()
        backend.drop(url)


def run(backend: Backend, ns: list[int], trials: int, tmp: Path,
        log: Callable[[str], None]) -> dict[str, Any]:
    """Every tool at every N, ``trials`` times, interleaved tool by tool."""
    tools, skipped = tools_here()
    where = write_projects(tmp / "stampede", projects.write_yoyo_set(
        "postgresql", tmp / "stampede" / "yoyo"))
    workdir = tmp / "stampede" / "run"
    workdir.mkdir()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in ns:
        per_tool: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        raw[str(n)] = per_tool
        for k in range(trials):
            for tool in tools:
                record = trial(tool, n, backend, where, workdir)
                per_tool[tool].append(record)
                log(f"stampede N={n} {tool} trial {k + 1}/{trials}: all exited "
                    f"{record['all_exited']:.2f} s, CPU/process {record['cpu_median']:.3f} s, "
                    f"{record['failures']} failed, correct={record['correct']}")
    return {"tools": tools, "skipped": skipped, "trials": raw, "summary": summarize(raw)}


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, per_tool in raw.items():
        for tool, records in per_tool.items():
            if not records:
                continue
            taxes = [t for r in records for t in r.get("exit_tax", [])]
            out.setdefault(n, {})[tool] = {
                "trials": len(records),
                "processes": sum(r["n"] for r in records),
                "all_exited_median": median([r["all_exited"] for r in records]),
                "all_exited_max": max(r["all_exited"] for r in records),
                "cpu_per_process_median": median([c for r in records for c in r["cpu"]]),
                "cpu_total_median": median([r["cpu_total"] for r in records]),
                "waiter_cpu_median": median([r["waiter_cpu_median"] for r in records
                                             if r.get("waiter_cpu_median") is not None]),
                "leader_cpu_median": median([r["leader_cpu"] for r in records
                                             if r.get("leader_cpu") is not None]),
                "exit_tax_p50": percentile(taxes, 50) if taxes else None,
                "exit_tax_max": max(taxes) if taxes else None,
                "failures": sum(r["failures"] for r in records),
                "incorrect_trials": sum(not r["correct"] for r in records),
                "first_error": next((r["first_error"] for r in records if r["first_error"]),
                                    None),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stampede", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="PostgreSQL server (admin database URL)")
    parser.add_argument("-n", default="8,32", help="herd sizes (default 8,32)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="herd-stampede-"))
    backend = Backend("postgresql", "", "", make_url(args.url), tmp)
    try:
        result = run(backend, [int(x) for x in args.n.split(",")], args.trials, tmp,
                     lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| N | tool | all exited (median) | CPU per process | waiter CPU | last line -> "
          "exit p50 | max | failed | incorrect trials |\n|---|---|---|---|---|---|---|---|---|")
    for n, tools in result["summary"].items():
        for tool, e in tools.items():
            print(f"| {n} | {tool} | {e['all_exited_median']:.2f} s | "
                  f"{e['cpu_per_process_median']:.3f} s | "
                  f"{e['waiter_cpu_median'] or float('nan'):.3f} s | "
                  f"{1000 * (e['exit_tax_p50'] or float('nan')):.1f} ms | "
                  f"{1000 * (e['exit_tax_max'] or float('nan')):.1f} ms | "
                  f"{e['failures']}/{e['processes']} | {e['incorrect_trials']} |")
    for tool, why in result["skipped"].items():
        print(f"{tool}: skipped ({why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
