"""The fault suite's replica: ``alembic_herd.demo.replica`` run as ``herd`` runs it, plus the
test-only switches that turn one protection off for a control run.

``python tests/faults/driver.py MODE CONFIG URL [options] [-- CMD...]`` - the arguments and
the stdin/stdout protocol of :mod:`alembic_herd.demo.replica`. Like the ``herd`` CLI (and
unlike the library, which leaves an application's signals alone) it handles SIGTERM and
SIGINT: a signal stops the work, and the report says ``exit_code`` 128 + the signal, with
the CLI's one ``herd: error:`` line in ``error``.

``HERD_FAULT_CONTROL`` (comma-separated) switches protections off, for the controls only;
it is read here and nowhere in the library:

* ``no-signals`` - no signal handlers: SIGTERM/SIGINT kill the process at once, as before
  herd handled them;
* ``no-fence`` - the lease checks nothing inside a revision's transaction (a stale holder
  commits);
* ``no-rivals`` - a lock never looks at the other lock kinds (two kinds, two leaders);
* ``no-takeover`` - a replica that waited for another's lock never takes it over: when the
  lock comes free it stops (``WaitTimeoutError``, exit 7), as replicas that trust the
  first leader to finish would;
* ``no-lock`` - no lock at all: every replica leads at once (each lock is "taken" without
  asking the database, and never found lost), as plain ``alembic upgrade head`` replicas;
* ``no-group`` - a wrapped command runs the way herd used to run it (``subprocess.run``:
  no process group, nothing forwarded, no parent-death signal); implies ``no-signals``.

``HERD_FAULT_KEEPALIVES=idle,interval,count`` scales herd's TCP keepalives down (client and
server side), so that a trial can pause a leader past them in seconds.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from alembic_herd import _command, _database, _leader, _lockwait
from alembic_herd._signals import Interrupted, handling_signals
from alembic_herd.demo import replica
from alembic_herd.errors import WaitTimeoutError
from alembic_herd.locks import Lock
from alembic_herd.locks import mysql as _mysql_lock  # noqa: F401 - never_lost() patches it
from alembic_herd.locks import postgresql as pg_lock
from alembic_herd.locks import sqlite as _sqlite_lock  # noqa: F401 - never_lost() patches it
from alembic_herd.locks.lease import LeaseLock

CONTROLS = set(filter(None, os.environ.get("HERD_FAULT_CONTROL", "").split(",")))
KNOWN = {"no-signals", "no-fence", "no-rivals", "no-group", "no-lock", "no-takeover"}
plain_act = replica.act  # the replica's own work, before act() below wraps it


def scale_keepalives(text: str) -> None:
    idle, interval, count = (int(v) for v in text.split(","))
    old = new = _database.SERVER_KEEPALIVES
    was = (_database._IDLE, _database._INTERVAL, _database._COUNT)
    for name, before, after in zip(("idle", "interval", "count"), was, (idle, interval, count),
                                   strict=True):
        new = new.replace(f"('tcp_keepalives_{name}', {before})",
                          f"('tcp_keepalives_{name}', {after})")
    new = new.replace(f"('tcp_user_timeout', {(was[0] + was[1] * was[2]) * 1000})",
                      f"('tcp_user_timeout', {(idle + interval * count) * 1000})")
    assert new != old, "the keepalive expression changed shape: update the driver"
    _database.KEEPALIVES = (idle, interval, count)  # type: ignore[attr-defined]  # client
    _leader.SERVER_KEEPALIVES = new  # type: ignore[attr-defined]  # rides with the lock wait
    _lockwait._SERVER_KEEPALIVES = sa.text(f"SELECT {new}")
    pg_lock._CLAIM = pg_lock._CLAIM.replace(old, new)


def plain_run(argv: Sequence[str], *, env: Mapping[str, str], **_: Any) -> _command.Finished:
    """How herd ran a wrapped command before: a plain child, nothing forwarded."""
    began = time.monotonic()
    done = subprocess.run(list(argv), env=dict(env), check=False)
    return _command.Finished(done.returncode, (), time.monotonic() - began)


@contextlib.contextmanager
def no_lock(self: Lock, *_: Any, **__: Any) -> Iterator[bool]:
    """``Lock.acquire`` for the ``no-lock`` control: held at once, by everyone."""
    yield True


def no_takeover(acquire: Any) -> Any:
    """``Lock.acquire`` for the ``no-takeover`` control: a lock that had to be waited for
    is given back at once, and the replica stops instead of taking the migration over."""

    @contextlib.contextmanager
    def first_or_never(self: Lock, deadline: Any, *, while_waiting: Any = None,
                       **options: Any) -> Iterator[bool]:
        waited = []

        def look() -> bool:
            waited.append(True)
            return bool(while_waiting()) if while_waiting is not None else False

        with acquire(self, deadline, while_waiting=look, **options) as held:
            if held and waited:
                raise WaitTimeoutError("control no-takeover: the replica this one waited for "
                                       "is gone; not taking its migration over")
            yield held

    return first_or_never


def never_lost(cls: type[Lock]) -> None:
    """The ``no-lock`` control: ``cls`` and its subclasses never find their lock lost."""
    for sub in (cls, *cls.__subclasses__()):
        sub.verify = lambda self: None  # type: ignore[method-assign]
        sub.check = lambda self, values: None  # type: ignore[method-assign]
        sub.fence = Lock.fence  # type: ignore[method-assign]
        if sub is not cls:
            never_lost(sub)


def act(args: Any, migrate_command: Sequence[str] = ()) -> dict[str, Any]:
    if CONTROLS & {"no-signals", "no-group"}:
        return plain_act(args, migrate_command)
    with handling_signals():  # as the CLI: herd's exits.run_verb
        try:
            return plain_act(args, migrate_command)
        except Interrupted as stop:
            line = f"herd: error: stopped by {stop.name}" + (f" {stop.detail}" if stop.detail
                                                             else "")
            print(line, file=sys.stderr, flush=True)
            return {"pid": os.getpid(), "exit_code": stop.exit_code, "type": "Interrupted",
                    "error": line, "finished": time.time()}


if __name__ == "__main__":
    unknown = CONTROLS - KNOWN
    assert not unknown, f"unknown HERD_FAULT_CONTROL {unknown}"
    if os.environ.get("HERD_FAULT_KEEPALIVES"):
        scale_keepalives(os.environ["HERD_FAULT_KEEPALIVES"])
    if "no-fence" in CONTROLS:
        LeaseLock.fence = Lock.fence  # type: ignore[method-assign]
    if "no-rivals" in CONTROLS:
        Lock.rival_holder = lambda self: None  # type: ignore[method-assign]
    if "no-group" in CONTROLS:
        _command.run = plain_run
    if "no-takeover" in CONTROLS:
        Lock.acquire = no_takeover(Lock.acquire)  # type: ignore[method-assign]
    if "no-lock" in CONTROLS:
        Lock.acquire = no_lock  # type: ignore[method-assign]
        Lock.rival_holder = lambda self: None  # type: ignore[method-assign]
        never_lost(Lock)  # type: ignore[type-abstract]
    replica.act = act
    sys.exit(replica.main(sys.argv[1:]))
