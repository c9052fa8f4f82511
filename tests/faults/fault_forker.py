"""Hundreds of replicas without hundreds of interpreters' worth of memory:
``fault_forker.py N CONFIG URL LOGDIR [--timeout SECONDS]``.

Imports everything once, forks N children (copy-on-write: each is a real process with its
own connections), says ``ready`` and waits for ``go`` on stdin; then releases all children
at once through one pipe (each reads one byte). Each child runs ``alembic_herd.upgrade``,
logs at INFO into LOGDIR/<pid>.log and writes one JSON line into LOGDIR/<pid>.json. The
parent prints ``done`` when every child has exited.
"""

import argparse
import json
import logging
import os
import sys
import time

import alembic_herd
import alembic_herd._database
import alembic_herd._history
import alembic_herd._log
import alembic_herd._runner
import alembic_herd.locks.lease
import alembic_herd.locks.postgresql

parser = argparse.ArgumentParser()
parser.add_argument("n", type=int)
parser.add_argument("config")
parser.add_argument("url")
parser.add_argument("logdir")
parser.add_argument("--timeout", type=float, default=300.0)
args = parser.parse_args()


def child(gate: int) -> None:
    pid = os.getpid()  # herd reads it when it needs it: each child names itself
    log = open(os.path.join(args.logdir, f"{pid}.log"), "w")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    os.read(gate, 1)
    start = time.monotonic()
    report: dict[str, object] = {"pid": pid}
    code = 0
    try:
        outcome = alembic_herd.upgrade(args.config, url=args.url, lock_timeout=args.timeout)
        report.update(action=outcome.action, revisions=list(outcome.revisions))
    except alembic_herd.HerdError as exc:
        report.update(error=str(exc), type=type(exc).__name__)
        code = exc.exit_code
    except Exception as exc:
        report.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                      type=type(exc).__name__)
        code = 1
    report.update(code=code, seconds=time.monotonic() - start, finished=time.time())
    with open(os.path.join(args.logdir, f"{pid}.json"), "w") as out:
        out.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


gate_read, gate_write = os.pipe()
children = []
for _ in range(args.n):
    pid = os.fork()
    if pid == 0:
        os.close(gate_write)
        child(gate_read)
    children.append(pid)
os.close(gate_read)
print("ready", flush=True)
sys.stdin.readline()
os.write(gate_write, b"g" * args.n)
for pid in children:
    os.waitpid(pid, 0)
print("done", flush=True)
