"""``python -m bench``: run every benchmark in one run; write the JSON and the tables.

::

    python -m bench                 # everything (about 10 minutes on 2 cores)
    python -m bench --quick         # a short smoke run (small N, one trial each)
    python -m bench --backends sqlite --quick --out /tmp/b.json --report /tmp/b.md
    python -m bench --from-json bench/results/latest.json   # re-write the tables only

PostgreSQL is an embedded server started for the run (``--postgres-url`` uses a server
instead); MariaDB is the server at ``--mysql-url`` (default ``127.0.0.1:3306``, root);
SQLite is a temporary file. A backend that cannot be reached is skipped and the report
says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import machine, sections, stampede
from .backends import ALL, Servers

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"
DEFAULT_REPORT = ROOT / "docs" / "benchmarks.md"
HERD1000 = ROOT / "bench" / "results" / "herd1000.json"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: N=1,4, one trial, small migration sets")
    parser.add_argument("--backends", default=",".join(ALL),
                        help=f"comma-separated, from {', '.join(ALL)} (default: all)")
    parser.add_argument("--ns", type=_ints, help="herd sizes (default 1,4,16,64)")
    parser.add_argument("--trials", type=int, help="trials per N up to 16 (default 5; N=1 "
                        "and 4 get two more)")
    parser.add_argument("--big-trials", type=int, help="trials for N > 16 (default 3)")
    parser.add_argument("--reps", type=int, help="repetitions of each whole-process timing "
                        "and per-migration run (default 5)")
    parser.add_argument("--sizes", type=_ints,
                        help="revision counts for the nothing-pending timings (default 10,500)")
    parser.add_argument("--chain", type=int, help="revisions in the per-migration chain "
                        "(default 200)")
    parser.add_argument("--stampede", type=_ints, metavar="NS",
                        help="whole-process stampede sizes on PostgreSQL (default 8,32)")
    parser.add_argument("--postgres-url", help="a PostgreSQL server (admin database URL) to "
                        "use instead of an embedded one")
    parser.add_argument("--mysql-url", help="MariaDB/MySQL server URL (default "
                        "mysql+pymysql://root@127.0.0.1:3306/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON results")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT,
                        help="the Markdown report whose tables are re-written (its chart "
                        "goes to img/ beside it)")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--from-json", type=Path, metavar="RESULTS",
                        help="measure nothing: re-write the tables from a results file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.ns = args.ns or ([1, 4] if quick else [1, 4, 16, 64])
    args.trials = args.trials or (1 if quick else 5)
    args.big_trials = args.big_trials or (1 if quick else 3)
    args.reps = args.reps or (1 if quick else 5)
    args.sizes = args.sizes or ([10, 50] if quick else [10, 500])
    args.chain = args.chain or (20 if quick else 200)
    args.stampede = args.stampede or ([4] if quick else [8, 32])
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json:
        from . import report

        for path in report.write(json.loads(args.from_json.read_text()), args.report):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    def trials(n: int) -> int:
        if n > 16:
            return args.big_trials
        return args.trials + (2 if n <= 4 and not args.quick else 0)

    results: dict[str, Any] = {
        "schema": 1,
        "run": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "argv": sys.argv[1:] if argv is None else argv,
            "load_before": machine.load(),
            "source_digest": machine.source_digest(),
            "plan": {"ns": args.ns, "trials": {str(n): trials(n) for n in args.ns},
                     "reps": args.reps, "sizes": args.sizes, "chain": args.chain,
                     "stampede": args.stampede},
        },
        "machine": machine.describe(),
        "backends": {},
        "herd_start": {}, "overhead": {}, "wakeup": {}, "connections": {},
        "idle_cost": {}, "readiness": {}, "per_migration": {},
        "interpreter": {}, "stampede": {},
        "notes": [],
    }
    if not sections.yoyo_available():
        results["notes"].append("yoyo-migrations is not installed (pip install -e '.[bench]'); "
                                "its columns are empty")
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    try:
        with Servers(tmp) as servers:
            backends = servers.open(args.backends, postgres_url=args.postgres_url,
                                    mysql_url=args.mysql_url)
            for name, why in servers.skipped.items():
                log(f"{name}: skipped ({why})")
                results["backends"][name] = {"skipped": why}
            for b in backends:
                results["backends"][b.name] = {"version": b.version, "where": b.where}
                log(f"{b.name}: {b.version}, {b.where}")
            for b in backends:
                start = sections.herd_start(b, args.ns, trials, tmp, log)
                results["herd_start"][b.name] = start
                results["overhead"][b.name] = sections.overhead(start)
                results["wakeup"][b.name] = sections.wakeup(start)
                if b.name == "postgresql":
                    results["connections"][b.name] = sections.connections(start)
            for b in backends:
                if b.name == "postgresql" and b.server is not None:
                    results["stampede"] = stampede.run(b, args.stampede, args.big_trials,
                                                       tmp, log)
            results["interpreter"] = sections.interpreter_baseline(args.reps)
            for b in backends:
                idle = sections.idle_cost(b, args.sizes, args.reps, tmp, log)
                results["readiness"][b.name] = idle.pop("readiness", {})
                results["idle_cost"][b.name] = idle
            for b in backends:
                results["per_migration"][b.name] = sections.per_migration(
                    b, args.chain, args.reps, tmp, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if HERD1000.exists():  # measured apart (make herd1000): carried along for the report
        results["herd1000"] = json.loads(HERD1000.read_text())
    results["run"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["run"]["duration_seconds"] = round(time.monotonic() - began, 1)
    results["run"]["load_after"] = machine.load()
    if machine.source_digest() != results["run"]["source_digest"]:
        results["run"]["source_changed"] = True
        results["notes"].append(
            "herd's source files (src/alembic_herd) changed while this run was going on: the "
            "in-process measurements used the version loaded at the start, the whole-process "
            "ones (section 3) whatever was on disk at the time.")
        log("warning: src/alembic_herd changed during the run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"wrote {args.out}")
    if not args.no_report:
        from . import report

        written = report.write(results, args.report)
        for path in written:
            log(f"wrote {path}")
    return 0
