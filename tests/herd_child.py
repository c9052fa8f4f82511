"""One replica for the herd tests: ``herd_child.py MODE CONFIG URL [target] [-- CMD...]``.

MODE is ``herd`` (alembic_herd.upgrade), ``wait`` (alembic_herd.wait_until_current),
``alembic`` (plain ``alembic upgrade head``, the control) or ``command``
(alembic_herd.upgrade running CMD... under the lock). Prints one JSON line.
"""

import json
import sys
import time

from alembic import command
from alembic.config import Config

import alembic_herd

args = sys.argv[1:]
migrate_command = args[args.index("--") + 1:] if "--" in args else None
args = args[:args.index("--")] if "--" in args else args
mode, config, url = args[:3]
target = args[3] if len(args) > 3 else "head"
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
try:
    if mode in ("herd", "command"):
        outcome = alembic_herd.upgrade(config, url=url, target=target, lock_timeout=240,
                                       command=migrate_command if mode == "command" else None)
        report = {"action": outcome.action, "revisions": list(outcome.revisions),
                  "heads": list(outcome.heads), "waited": outcome.waited_seconds}
    elif mode == "wait":
        outcome = alembic_herd.wait_until_current(config, url=url, target=target, timeout=240)
        report = {"action": outcome.action, "heads": list(outcome.heads)}
    elif mode == "alembic":
        cfg = Config(config)
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.upgrade(cfg, target)
        report = {"action": "alembic"}
    else:
        raise SystemExit(f"unknown mode {mode}")
except alembic_herd.HerdError as exc:
    print(json.dumps({"error": str(exc), "type": type(exc).__name__,
                      "seconds": time.monotonic() - start}))
    sys.exit(exc.exit_code)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                      "type": type(exc).__name__, "seconds": time.monotonic() - start}))
    sys.exit(1)
report["seconds"] = time.monotonic() - start
print(json.dumps(report))
