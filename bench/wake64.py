"""The in-process wake-up of ``make bench`` alone (issue 17, point 2: N=64 on PostgreSQL,
p99 <= 50 ms), with where each waiter's time went.

The same trial as :func:`bench.sections.herd_start`'s herd column (N forked processes
calling ``alembic_herd.upgrade()`` on a fresh database, :mod:`bench.release`), without the
other tools and sections, so that before/after runs take seconds::

    python -m bench.wake64 --url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        [-n 64] [--trials 3] [--json out.json]

Per trial: wake-up from the leader's lock release and from its commit (p50/p99/max, as
section 2 reports them), and the waiters split by how their wait ended: *late* (their
first pause began after the leader's commit: still starting up when it committed, so what
they "wake" from is their own start-up), *notified* (a notification ended a pause: from it
to the return), *polled* (no notification). The machine's load average is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import projects, release, sections
from .backends import Servers
from .stats import median, percentile


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"p50 {median(values) * 1000:.0f} / p99 {percentile(values, 99) * 1000:.0f} / "
            f"max {max(values) * 1000:.0f} ms (n={len(values)})")


class CpuSampler(threading.Thread):
    """The machine's CPU use (``/proc/stat``) every 10 ms, to tell how busy both cores were
    between the leader's commit and the last waiter's return."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, int]] = []
        self.halt = threading.Event()

    @staticmethod
    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def run(self) -> None:
        while not self.halt.is_set():
            busy, total = self.read()
            self.samples.append((time.time(), busy, total))
            self.halt.wait(0.01)

    def busy(self, begin: float, end: float) -> float | None:
        """The fraction of both cores busy from ``begin`` to ``end``."""
        inside = [s for s in self.samples if begin <= s[0] <= end]
        if len(inside) < 2:
            return None
        (_, b0, t0), (_, b1, t1) = inside[0], inside[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None


def analyse(trial: release.Trial, cpu: CpuSampler | None = None) -> dict[str, Any]:
    """The trial's wake-up figures and each waiter's story."""
    record = sections._wakeups(trial, "herd")
    leader = trial.leader()
    if leader is None:
        return {"error": "no leader"}
    committed = leader.events.get("committed", leader.events.get("released"))
    waiters = [c for c in trial.children if c.ok and c.action == "waited" and c is not leader]
    late = [c for c in waiters if c.events.get("first_pause", 0) > committed
            or "first_pause" not in c.events]
    notified = [c for c in waiters if "notified_at" in c.events and c not in late]
    polled = [c for c in waiters if c not in late and c not in notified]
    return {
        **record,
        "failures": trial.failures,
        "leader_commit_after_release_of_barrier": committed - trial.released,
        "leader_release_after_commit": leader.events.get("released", committed) - committed,
        "late": len(late), "notified": len(notified), "polled": len(polled),
        # late starters: when they started waiting, relative to the commit, and their return
        "late_first_pause_after_commit": [c.events["first_pause"] - committed
                                          for c in late if "first_pause" in c.events],
        "late_return_after_commit": [c.end - committed for c in late],
        "late_never_paused": sum(1 for c in late if "first_pause" not in c.events),
        # notified waiters: notification's arrival after the commit, and from it to return
        "notify_arrival_after_commit": [c.events["notified_at"] - committed for c in notified],
        "notified_to_return": [c.end - c.events["notified_at"] for c in notified],
        "polled_return_after_commit": [c.end - committed for c in polled],
        "waiter_start_to_first_pause": [c.events["first_pause"] - c.start for c in waiters
                                        if "first_pause" in c.events],
        "waiter_cpu": [c.cpu for c in waiters if c.cpu is not None],
        # how each late waiter's wait ended: took the free lock, a notification, or a look
        "late_took_lock": sum(1 for c in late if "released" in c.events),
        "late_notified": sum(1 for c in late if "notified_at" in c.events
                             and "released" not in c.events),
        "late_pauses": [c.events.get("pauses", 0) for c in late],
        "rows": [{"start": c.start - committed, "end": c.end - committed,
                  "first_pause": c.events.get("first_pause", 0) - committed,
                  "last_pause": c.events.get("last_pause", 0) - committed,
                  "last_pause_end": c.events.get("last_pause_end", 0) - committed,
                  "asked": c.events.get("last_pause_asked"),
                  "pending": c.events.get("pending", 0) - committed,
                  "notified": c.events.get("notified_at", 0) - committed
                  if "notified_at" in c.events else None,
                  "pauses": c.events.get("pauses"), "took_lock": "released" in c.events,
                  "polls": c.events.get("polls"), "statements": c.events.get("statements"),
                  "cpu": c.cpu} for c in waiters],
        "release_after_commit_s": leader.events.get("released", committed) - committed,
        "notify_first_after_commit": leader.events.get("notify_first", committed) - committed,
        "cores_busy_commit_to_last": cpu.busy(committed, max(c.end for c in waiters))
        if cpu and waiters else None,
        "gc_seconds": [c.events.get("gc_seconds", 0.0) for c in waiters],
        "gc_after_notify": [c.events.get("gc_after_notify", 0.0) for c in waiters],
        "gc_full": sum(c.events.get("gc_full", 0) for c in waiters),
    }


def _slow_project(folder: Path, seconds: float) -> Path:
    """bench/project with a first revision that sleeps ``seconds``; its alembic.ini."""
    shutil.copytree(projects.HERDSET, folder / "project")
    first = folder / "project" / "migrations" / "versions" / "a1_accounts.py"
    text = first.read_text().replace("def upgrade() -> None:\n",
                                     f"def upgrade() -> None:\n    import time\n\n"
                                     f"    time.sleep({seconds})\n", 1)
    first.write_text(text)
    return folder / "project" / "alembic.ini"


def _server_cpu() -> float:
    """CPU seconds of the exited backends of the embedded PostgreSQL servers (each
    postmaster's waited-for children: cutime + cstime); the machine's own server, which other
    work shares, is left out."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() != "postgres":
                continue
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parent = Path(f"/proc/{fields[1]}/comm")
            if parent.exists() and parent.read_text().strip() == "postgres":
                continue  # a backend, not a postmaster
            if b"/var/lib/postgresql" in (proc / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        total += (int(fields[13]) + int(fields[14])) / tick
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wake64", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a PostgreSQL admin URL (default: an embedded server, "
                        "as make bench uses)")
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--hold-exits", action="store_true", help="children exit only once "
                        "all have returned (see bench.release.release)")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() before forking")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds the first revision "
                        "sleeps (a copy of bench/project): every waiter is waiting when the "
                        "leader commits, as the whole-process bench.wakeup arranges")
    args = parser.parse_args(argv)
    out: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="herd-wake64-"))
    ini = _slow_project(tmp, args.slow) if args.slow else None
    with Servers(tmp) as servers:
        backend = servers.open(["postgresql"], postgres_url=args.url, mysql_url=None)[0]
        where = backend.where if args.url is None else make_url(args.url).render_as_string()
        print(f"# {backend.version}, {where}", file=sys.stderr)
        for k in range(args.trials):
            load = os.getloadavg()[0]
            url = backend.create()
            try:
                cpu = CpuSampler()
                cpu.start()
                before, server = os.times(), _server_cpu()
                spec = sections._spec(backend, url, Path())
                if ini is not None:
                    spec["ini"] = str(ini)
                trial = release.release(args.n, "herd", spec,
                                        hold_exits=args.hold_exits, freeze=args.freeze)
                after, server = os.times(), _server_cpu() - server
                cpu.halt.set()
                cpu.join()
            finally:
                backend.drop(url)
            result = {"load": load, **analyse(trial, cpu)}
            children = (after.children_user + after.children_system
                        - before.children_user - before.children_system)
            inside = sum(c.cpu or 0.0 for c in trial.children)
            result["cpu_children_total"] = children
            result["cpu_children_measured"] = inside
            result["cpu_server_backends"] = server
            outside = (children - inside) / args.n * 1000
            print(f"  CPU: the {args.n} processes {children:.2f} s in all, of which "
                  f"{inside:.2f} s between the barrier and their return ({outside:.1f} "
                  f"ms each before and after: fork, result, exit); exited backends of "
                  f"every embedded server on the machine (others' too: indicative only) "
                  f"{server:.2f} s ({server / args.n * 1000:.1f} ms per connection)")
            out.append(result)
            print(f"trial {k + 1}: load {load:.1f}, failures {result['failures']}, leader "
                  f"committed {result['leader_commit_after_release_of_barrier']:.3f} s after "
                  f"the barrier, released {result['leader_release_after_commit'] * 1000:.0f} "
                  "ms after its commit", flush=True)
            print(f"  from release: {_ms(result.get('wakeups', []))}")
            print(f"  from commit:  {_ms(result.get('wakeups_from_commit', []))}")
            print(f"  waiters: {result['late']} late (first pause after the commit; "
                  f"{result['late_never_paused']} never paused), {result['notified']} "
                  f"notified, {result['polled']} polled")
            print(f"  late: first pause after commit {_ms(result['late_first_pause_after_commit'])}"
                  f"; return after commit {_ms(result['late_return_after_commit'])}")
            print(f"  notified: arrival after commit {_ms(result['notify_arrival_after_commit'])}"
                  f"; to return {_ms(result['notified_to_return'])}")
            print(f"  late: {result['late_took_lock']} took the free lock, "
                  f"{result['late_notified']} notified, pauses {result['late_pauses']}")
            print(f"  leader's first NOTIFY {result['notify_first_after_commit'] * 1000:.0f} ms "
                  f"after its commit; both cores busy "
                  f"{(result['cores_busy_commit_to_last'] or 0) * 100:.0f}% from the commit to "
                  f"the last return; gc per waiter {_ms(result['gc_seconds'])}, after the "
                  f"notification {_ms(result['gc_after_notify'])}, {result['gc_full']:.0f} full")
            print(f"  polled: return after commit {_ms(result['polled_return_after_commit'])}")
            print(f"  waiter start -> first pause {_ms(result['waiter_start_to_first_pause'])}; "
                  f"CPU per waiter {_ms(result['waiter_cpu'])}", flush=True)
            time.sleep(1)
    p99s = [percentile(r["wakeups"], 99) for r in out if r.get("wakeups")]
    p99c = [percentile(r["wakeups_from_commit"], 99) for r in out if r.get("wakeups_from_commit")]
    print(f"median over trials of p99 from release: {median(p99s) * 1000:.0f} ms "
          f"({', '.join(f'{x * 1000:.0f}' for x in p99s)}); from commit "
          f"{median(p99c) * 1000:.0f} ms ({', '.join(f'{x * 1000:.0f}' for x in p99c)}); "
          f"load now {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
