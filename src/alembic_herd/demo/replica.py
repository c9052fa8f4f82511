"""One replica: ``python -m alembic_herd.demo.replica MODE CONFIG URL [TARGET] [options]``.

The one child program of the demo, the tests, the fault suite and the benchmarks. MODE is

* ``herd`` - :func:`alembic_herd.upgrade` (migrate or wait);
* ``command`` - the same, running ``CMD...`` under the lock instead of Alembic;
* ``wait`` - :func:`alembic_herd.wait_until_current` (never migrates);
* ``alembic`` - plain ``alembic upgrade``, a runner that does not use herd (the control).

URL ``-`` reads the URL from ``HERD_REPLICA_URL`` (which keeps a password out of ``ps``).
Options: ``--lock KIND``, ``--lock-url URL``, ``--timeout SECONDS``, ``--lease-ttl SECONDS``,
``--events``; for ``command``, ``-- CMD...`` comes last.

The replica imports everything, prints ``ready`` and blocks on stdin (the barrier): every
replica starts migrating within milliseconds of the others once its parent writes ``go``.
herd logs at INFO as text on stderr; with ``--events`` each of herd's log events is also a
JSON line on stdout (``{"event": ..., "level": ..., "fields": {...}}``: the ``herd_event``
and ``herd`` fields of the log record, never its text). The last stdout line is the
report, a JSON object with ``exit_code``. Anything else written to stdout (a migration's
print) goes to stderr, so stdout carries only this protocol.

:func:`act` is the replica's work on its own, for harnesses that ``fork()`` their replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import alembic_herd

URL_VARIABLE = "HERD_REPLICA_URL"
MODES = ("herd", "command", "wait", "alembic")
LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alembic_herd.demo.replica",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("mode", choices=MODES)
    p.add_argument("config")
    p.add_argument("url")
    p.add_argument("target", nargs="?", default="head")
    p.add_argument("--lock", default="auto")
    p.add_argument("--lock-url")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--lease-ttl", type=float, default=30.0)
    p.add_argument("--events", action="store_true")
    return p


def act(args: argparse.Namespace, migrate_command: Sequence[str] = ()) -> dict[str, Any]:
    """Do what MODE says once; the report (``exit_code`` 0, or the error's)."""
    start = time.monotonic()
    report: dict[str, Any] = {"pid": os.getpid()}
    try:
        if args.mode in ("herd", "command"):
            outcome = alembic_herd.upgrade(
                args.config, url=args.url, target=args.target, lock=args.lock,
                lock_url=args.lock_url, lock_timeout=args.timeout, lease_ttl=args.lease_ttl,
                command=list(migrate_command) if args.mode == "command" else None)
            report.update(outcome.as_dict(), waited=outcome.waited_seconds)
        elif args.mode == "wait":
            outcome = alembic_herd.wait_until_current(args.config, url=args.url,
                                                      target=args.target,
                                                      lock_url=args.lock_url,
                                                      timeout=args.timeout)
            report.update(outcome.as_dict())
        else:
            cfg = Config(args.config)
            cfg.set_main_option("sqlalchemy.url", args.url.replace("%", "%%"))
            command.upgrade(cfg, args.target)
            report.update(action="alembic")
        report["exit_code"] = 0
    except alembic_herd.HerdError as exc:
        report.update(error=str(exc), type=type(exc).__name__, exit_code=exc.exit_code)
    except Exception as exc:  # its first line, as for herd's own errors (no traceback)
        report.update(error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                      type=type(exc).__name__, exit_code=1)
    report.update(seconds=time.monotonic() - start, finished=time.time())
    return report


class _Events(logging.Handler):
    """Each of herd's log events as one JSON line: its name and fields, not its text."""

    def __init__(self, channel: IO[str]) -> None:
        super().__init__(logging.INFO)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "herd_event", None)
        if name is None:
            return
        try:
            _send(self.channel, {"event": name, "level": record.levelname,
                                 "time": record.created, "fields": getattr(record, "herd", {})})
        except Exception:
            self.handleError(record)


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message, default=str) + "\n")
    channel.flush()


def _preload(url: str) -> None:
    """Import what the first call would import, so that the barrier is a fair start."""
    for module in ("alembic.command", "alembic.script", "alembic.runtime.migration",
                   "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql",
                   "sqlalchemy.dialects.sqlite", "psycopg", "psycopg2", "pymysql"):
        with contextlib.suppress(ImportError):  # another driver: SQLAlchemy will say so
            importlib.import_module(module)
    with contextlib.suppress(Exception):  # a bad URL is the replica's error to report
        sa.engine.make_url(url).get_dialect()


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    migrate_command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.url == "-":
        args.url = os.environ.get(URL_VARIABLE, "")
    # stdout becomes the protocol channel; fd 1 (and sys.stdout) now go to stderr
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    if args.events:
        logging.getLogger("alembic_herd").addHandler(_Events(channel))
    _preload(args.url)
    channel.write("ready\n")
    channel.flush()
    if not sys.stdin.readline():  # the parent went away before opening the barrier
        return 1
    report = act(args, migrate_command)
    _send(channel, report)
    return int(report["exit_code"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
