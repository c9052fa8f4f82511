"""One replica of ``herd demo``: ``python -m alembic_herd.demo.replica`` (started by the demo).

It loads everything first, prints a ``ready`` line, then blocks on stdin (the barrier) so
that every replica starts migrating within milliseconds of the others. Released, it calls
:func:`alembic_herd.upgrade` on the demo project and forwards each event that alembic-herd
logs as one JSON line on stdout; the last line is its outcome or its error.

The database URL comes from ``HERD_DEMO_URL`` (not argv, so no password shows in ``ps``).
Anything else written to stdout (a migration's print) is diverted to stderr, so that
stdout carries only the JSON protocol.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import time
from typing import IO, Any

import alembic_herd
from alembic_herd._log import replica

from . import CONFIG, LOCK_TIMEOUT, URL_VARIABLE


def _preload() -> None:
    """Import what the first call would import, so that the barrier is a fair start."""
    for module in ("alembic.command", "alembic.script", "sqlalchemy.dialects.postgresql",
                   "psycopg"):
        with contextlib.suppress(ImportError):  # another driver: SQLAlchemy will say so
            importlib.import_module(module)


class _Forward(logging.Handler):
    """Each ``alembic_herd`` log record as one JSON line on the protocol channel."""

    def __init__(self, channel: IO[str]) -> None:
        super().__init__(logging.DEBUG)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            send(self.channel, {
                "type": "event",
                "event": getattr(record, "herd_event", None),
                "level": record.levelname,
                "message": record.getMessage(),
                "fields": getattr(record, "herd", None) or {},
            })
        except Exception:
            self.handleError(record)


def send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message, default=str) + "\n")
    channel.flush()


def run() -> int:
    # stdout becomes the protocol channel; fd 1 (and sys.stdout) now go to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    url = os.environ.get(URL_VARIABLE)
    if not url:
        send(channel, {"type": "error", "error": f"{URL_VARIABLE} is not set",
                       "kind": "ConfigurationError", "exit_code": 3})
        return 3
    _preload()
    log = logging.getLogger("alembic_herd")
    log.setLevel(logging.INFO)
    log.addHandler(_Forward(channel))
    log.propagate = False

    send(channel, {"type": "ready", "pid": os.getpid(), "replica": replica()})
    if not sys.stdin.readline():  # the parent went away before releasing the herd
        return 1
    start = time.monotonic()
    try:
        outcome = alembic_herd.upgrade(str(CONFIG), url=url, lock_timeout=LOCK_TIMEOUT)
    except alembic_herd.HerdError as exc:
        send(channel, {"type": "error", "error": str(exc), "kind": type(exc).__name__,
                       "exit_code": exc.exit_code, "seconds": time.monotonic() - start})
        return exc.exit_code
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        send(channel, {"type": "error", "error": first, "kind": type(exc).__name__,
                       "exit_code": 2, "seconds": time.monotonic() - start})
        raise
    send(channel, {"type": "outcome", "outcome": outcome.as_dict(),
                   "seconds": time.monotonic() - start})
    return 0


if __name__ == "__main__":
    sys.exit(run())
