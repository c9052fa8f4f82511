"""Hundreds of replicas without hundreds of interpreters' worth of memory:
``fault_forker.py N CONFIG URL LOGDIR [--timeout SECONDS]``.

Imports everything once, forks N children (copy-on-write: each is a real process with its
own connections), says ``ready`` and waits for ``go`` on stdin; then releases all children
at once through one pipe (each reads one byte). Each child does the shared replica's work
(:func:`alembic_herd.demo.replica.act`, mode ``herd``), logs at INFO into LOGDIR/<pid>.log
and writes its report as one JSON line into LOGDIR/<pid>.json. The parent prints ``done``
when every child has exited.
"""

import argparse
import importlib
import json
import logging
import os
import sys

from alembic_herd.demo import replica

# what every child would import, imported once before forking (copy-on-write)
for module in ("alembic_herd._database", "alembic_herd._history", "alembic_herd._runner",
               "alembic_herd.locks.lease", "alembic_herd.locks.postgresql"):
    importlib.import_module(module)

parser = argparse.ArgumentParser()
parser.add_argument("n", type=int)
parser.add_argument("config")
parser.add_argument("url")
parser.add_argument("logdir")
parser.add_argument("--timeout", default="300")
args = parser.parse_args()
work = replica.parser().parse_args(["herd", args.config, args.url, "--timeout", args.timeout])


def child(gate: int) -> None:
    pid = os.getpid()  # herd reads it when it needs it: each child names itself
    log = open(os.path.join(args.logdir, f"{pid}.log"), "w")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=replica.LOG_FORMAT)
    os.read(gate, 1)
    report = replica.act(work)
    report["code"] = report["exit_code"]
    with open(os.path.join(args.logdir, f"{pid}.json"), "w") as out:
        out.write(json.dumps(report, default=str) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report["exit_code"])


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
