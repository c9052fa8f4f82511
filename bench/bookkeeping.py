"""Issue 17 point 3: herd's bookkeeping against plain Alembic, in whole processes.

A chain of N generated revisions (:func:`bench.projects.write_chain`) on a fresh database:
``herd migrate`` against ``alembic upgrade head``, run back to back (paired), in one
transaction for all revisions and with ``transaction_per_migration``; wall time and CPU
(user + sys of the whole process, from ``wait4``) per run, medians and the paired median
ratio. Also one replica on a fresh database with a one-revision chain. Standalone for now
(the bench section can call :func:`measure`)::

    python -m bench.bookkeeping --url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        -n 200 --runs 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from . import projects

BIN = Path(sys.executable).parent
TPM_LINE = "context.configure(connection=connection)"


def _fresh(server: URL, work: Path) -> URL:
    if server.get_backend_name() == "sqlite":
        return make_url(f"sqlite:///{work / f'bk_{uuid.uuid4().hex[:10]}.db'}")
    name = f"herd_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.set(database=name)


def _drop(server: URL, url: URL) -> None:
    if server.get_backend_name() == "sqlite":
        Path(url.database or "").unlink(missing_ok=True)
        return
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    force = " WITH (FORCE)" if server.get_backend_name() == "postgresql" else ""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.database}{force}")
    engine.dispose()


def _run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys) of one whole process."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def _project(work: Path, count: int, per_migration: bool) -> Path:
    folder = work / f"chain-{count}-{'tpm' if per_migration else 'one'}"
    if folder.exists():
        shutil.rmtree(folder)
    ini = projects.write_chain(folder, count)
    if per_migration:
        env_py = folder / "migrations" / "env.py"
        env_py.write_text(env_py.read_text().replace(
            TPM_LINE, "context.configure(connection=connection, transaction_per_migration=True)"))
    return ini


def measure(server: URL, count: int, runs: int, *, per_migration: bool) -> dict[str, Any]:
    """Paired runs of herd and Alembic on ``count`` revisions; medians and ratios."""
    work = Path(tempfile.mkdtemp(prefix="herd-bookkeeping-"))
    try:
        ini = _project(work, count, per_migration)
        times: dict[str, list[tuple[float, float]]] = {"herd": [], "alembic": []}
        for _ in range(runs):
            for tool in ("alembic", "herd"):
                url = _fresh(server, work)
                projects.set_url(ini, url)
                argv = ([str(BIN / "herd"), "migrate", "-c", str(ini)] if tool == "herd" else
                        [str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"])
                try:
                    times[tool].append(_run(argv))
                finally:
                    _drop(server, url)
        pairs = list(zip(times["herd"], times["alembic"], strict=True))
        return {
            "revisions": count, "per_migration": per_migration, "runs": runs,
            **{f"{tool}_wall": statistics.median(w for w, _ in t) for tool, t in times.items()},
            **{f"{tool}_cpu": statistics.median(c for _, c in t) for tool, t in times.items()},
            "wall_ratio": statistics.median(h[0] / a[0] for h, a in pairs),
            "cpu_ratio": statistics.median(h[1] / a[1] for h, a in pairs),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a server URL (a database is created "
                        "per run), or sqlite:///any.db for SQLite files")
    parser.add_argument("-n", "--revisions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = make_url(args.url)
    print("| revisions | transactions | herd wall | alembic wall | ratio | herd CPU | "
          "alembic CPU | ratio | runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count in (args.revisions, 1):
        for per_migration in (False, True):
            r = measure(server, count, args.runs, per_migration=per_migration)
            print(f"| {count} | {'per migration' if per_migration else 'one'} | "
                  f"{r['herd_wall']:.3f} s | {r['alembic_wall']:.3f} s | {r['wall_ratio']:.2f}× | "
                  f"{r['herd_cpu']:.3f} s | {r['alembic_cpu']:.3f} s | {r['cpu_ratio']:.2f}× | "
                  f"{r['runs']} |", flush=True)


if __name__ == "__main__":
    main()
