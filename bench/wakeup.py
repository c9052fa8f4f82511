"""Wake-up of whole ``herd migrate`` processes on PostgreSQL (issue 17, point 2).

N ``herd migrate`` processes start together on a fresh database whose first revision is
slow (``--slow`` seconds, a ``time.sleep`` inside ``upgrade()``): one leads, the others
wait. Measured per trial:

* each waiter's exit minus the leader's exit (process exits seen by this script, one
  clock): p50, p99, max;
* the waiters' load during the slow revision: the statements each waiter's SQLAlchemy
  engine executed from 1 s after the last waiter's first statement to 1 s before the
  leader's exit, per waiter per second (counted in each process, one clock:
  ``pg_stat_database``'s ``xact_commit`` lags under load, its backends defer flushing).

::

    python -m bench.wakeup --url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        [--python .venv/bin/python] [-n 16] [--slow 15] [--trials 3]

``--python`` may name another checkout's interpreter: the same run then compares two
versions of herd on one machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from .projects import ENV_PY, set_url
from .stats import percentile

DATABASE = "herd_wakeup_bench"

SLOW = '''"""slow first revision

Revision ID: w1
Revises:
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "w1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    time.sleep({slow})
    op.create_table("slow", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("slow")
'''

QUICK = '''"""second revision

Revision ID: w2
Revises: w1
"""
import sqlalchemy as sa
from alembic import op

revision = "w2"
down_revision = "w1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("quick", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("quick")
'''


def write_project(folder: Path, url: URL, slow: float) -> Path:
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(ENV_PY, folder / "migrations" / "env.py")
    (versions / "w1_slow.py").write_text(SLOW.format(slow=slow))
    (versions / "w2_quick.py").write_text(QUICK)
    ini = folder / "alembic.ini"
    set_url(ini, url)
    return ini


# ``herd migrate`` with a statement clock: each statement's time.monotonic() (one clock for
# every process on the machine) goes to a file when the process leaves
COUNTING = """
import atexit, sys, time
import sqlalchemy as sa
stamps, out = [], sys.argv.pop()
sa.event.listen(sa.engine.Engine, "before_cursor_execute",
                lambda *a: stamps.append(time.monotonic()))
atexit.register(lambda: open(out, "w").write(" ".join(map(repr, stamps))))
from alembic_herd.cli import main
main()
"""

# the ``herd`` command itself (its fast lane first): the lane's statements are stamped
# through its raw connection, the normal path's (the leader's) through SQLAlchemy once loaded
COUNTING_LANE = """
import atexit, sys, time
stamps, out = [], sys.argv.pop()
from alembic_herd import _fastlane
rows = _fastlane._Db.rows
def counted(self, *a, **k):
    stamps.append(time.monotonic())
    return rows(self, *a, **k)
_fastlane._Db.rows = counted
def save():
    open(out, "w").write(" ".join(map(repr, stamps)))
atexit.register(save)
import os
leave = os._exit
def leaving(code):
    save()
    leave(code)
os._exit = leaving
_fastlane.console()
"""


def trial(admin: sa.Engine, server: URL, python: str, *, n: int, slow: float,
          folder: Path, entry: str = "normal") -> dict[str, object]:
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    ini = write_project(folder, server.set(database=DATABASE), slow)
    exits: dict[int, float] = {}
    procs: list[subprocess.Popen[str]] = []

    def watch(i: int, proc: subprocess.Popen[str]) -> None:
        proc.wait()
        exits[i] = time.monotonic()

    began = time.monotonic()
    threads = []
    for i in range(n):
        program = COUNTING_LANE if entry == "lane" else COUNTING
        proc = subprocess.Popen([python, "-c", program, "migrate", "-c", str(ini),
                                 str(folder / f"stamps{i}")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=folder)
        procs.append(proc)
        thread = threading.Thread(target=watch, args=(i, proc), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=120)
    outputs = [proc.stdout.read() if proc.stdout else "" for proc in procs]
    leaders = [i for i, out in enumerate(outputs) if "migrated 2 revision(s)" in out]
    failed = [i for i, proc in enumerate(procs) if proc.returncode != 0]
    if len(leaders) != 1 or failed:
        sys.stderr.write("".join(outputs[i] for i in failed[:2]))
        raise SystemExit(f"expected one leader and no failure: leaders {leaders}, "
                         f"failed {failed}")
    leader = leaders[0]
    lags = sorted(exits[i] - exits[leader] for i in range(n) if i != leader)
    stamps = {i: [float(x) for x in (folder / f"stamps{i}").read_text().split()]
              for i in range(n) if i != leader}
    # from 1 s after the last waiter's first statement to 1 s before the leader's exit
    t0, t1 = max(min(s) for s in stamps.values()) + 1.0, exits[leader] - 1.0
    if t1 - t0 < 2.0:
        raise SystemExit(f"the waiters took {t0 - began:.1f} s to start: raise --slow")
    counted = sum(t0 <= x < t1 for s in stamps.values() for x in s)
    return {"lags": lags, "qps": counted / (t1 - t0) / (n - 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="PostgreSQL server (admin database URL)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose alembic_herd runs (default: this one)")
    parser.add_argument("-n", type=int, default=16)
    parser.add_argument("--slow", type=float, default=15.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--entry", default="lane,normal",
                        help="lane: the herd command as installed (its fast lane first, "
                        "replicas wait on its gate); normal: alembic_herd.cli.main (the "
                        "normal path's LISTEN/NOTIFY waiters); default both, one row each")
    args = parser.parse_args(argv)
    server = make_url(args.url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    print("| entry | python | N | trials | leader exit -> waiter exit p50 | p99 | max | "
          "statements per waiter per s (median trial) |\n|---|---|---|---|---|---|---|---|")
    for entry in args.entry.split(","):
        lags: list[float] = []
        rates: list[float] = []
        for _ in range(args.trials):
            with tempfile.TemporaryDirectory() as tmp:
                result = trial(admin, server, args.python, n=args.n, slow=args.slow,
                               folder=Path(tmp), entry=entry)
            lags += result["lags"]  # type: ignore[arg-type]
            rates.append(result["qps"])  # type: ignore[arg-type]
        ms = [1000 * lag for lag in lags]
        p50, p99 = (percentile(ms, q) or 0.0 for q in (50, 99))
        print(f"| {entry} | {args.python} | {args.n} | {args.trials} | {p50:.0f} ms | "
              f"{p99:.0f} ms | {max(ms):.0f} ms | {statistics.median(rates):.2f} |", flush=True)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
