"""One replica for the fault suite: ``fault_child.py MODE CONFIG URL [options]``.

MODE is ``herd`` (alembic_herd.upgrade), ``wait`` (alembic_herd.wait_until_current) or
``alembic`` (plain ``alembic upgrade head``, a runner that does not use herd). Options:
``--lock KIND``, ``--lock-url URL``, ``--timeout SECONDS``, ``--lease-ttl SECONDS``. herd logs
at INFO on stderr (the suite checks that no password is ever printed). The child imports
everything, says ``ready`` and waits for ``go`` on stdin; then it prints one JSON line with
what it did.
"""

import argparse
import json
import logging
import os
import sys
import time

from alembic import command
from alembic.config import Config

import alembic_herd

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["herd", "wait", "alembic"])
parser.add_argument("config")
parser.add_argument("url")
parser.add_argument("--lock", default="auto")
parser.add_argument("--lock-url")
parser.add_argument("--timeout", type=float, default=120.0)
parser.add_argument("--lease-ttl", type=float, default=30.0)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
report: dict[str, object] = {"pid": os.getpid()}
try:
    if args.mode == "herd":
        outcome = alembic_herd.upgrade(args.config, url=args.url, lock=args.lock,
                                       lock_url=args.lock_url, lock_timeout=args.timeout,
                                       lease_ttl=args.lease_ttl)
        report.update(action=outcome.action, revisions=list(outcome.revisions),
                      heads=list(outcome.heads))
    elif args.mode == "wait":
        outcome = alembic_herd.wait_until_current(args.config, url=args.url,
                                                  lock_url=args.lock_url, timeout=args.timeout)
        report.update(action=outcome.action, heads=list(outcome.heads))
    else:
        cfg = Config(args.config)
        cfg.set_main_option("sqlalchemy.url", args.url.replace("%", "%%"))
        command.upgrade(cfg, "head")
        report.update(action="alembic")
    code = 0
except alembic_herd.HerdError as exc:
    report.update(error=str(exc), type=type(exc).__name__)
    code = exc.exit_code
except Exception as exc:
    report.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0], type=type(exc).__name__)
    code = 1
report.update(seconds=time.monotonic() - start, finished=time.time())
print(json.dumps(report), flush=True)
sys.exit(code)
