"""Where a faultset revision was when a fault came: every revision calls :func:`begin` first
and :func:`end` last, and sleeps in :func:`pause` in between.

Each call leaves two marks, with the migrating process's pid:

* a line ``<time> <pid> <revision> start|end`` appended to the journal file named by
  ``HERD_FAULT_JOURNAL`` and fsynced at once, outside any transaction: it survives a kill,
  the migration's rollback and a server restart, so the suite can tell after the fact that
  a revision had started and not ended when the fault came (no variable, no journal);
* a row in ``fault_marks`` inside the revision's own transaction: only committed work
  leaves one, so the suite can tell that nothing committed twice.

``begin`` journals before its row and ``end`` after its row: a journalled end means every
statement of the revision went through.

``HERD_FAULT_GATE=REVISION:PATH`` holds a process inside REVISION's :func:`pause` for as long
as the file PATH exists (at most two minutes): a trial keeps that revision under way until
what it times against it has happened (a long migration, on cue), instead of racing a sleep.
"""

import os
import time

import sqlalchemy as sa
from alembic import op


def _journal(revision: str, event: str) -> None:
    path = os.environ.get("HERD_FAULT_JOURNAL")
    if not path:
        return
    line = f"{time.time():.6f} {os.getpid()} {revision} {event}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)  # one short O_APPEND write: lines of processes never interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def _row(revision: str, event: str) -> None:
    bind = op.get_bind()
    now = {"postgresql": "clock_timestamp()",
           "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')"}.get(bind.dialect.name, "NOW(6)")
    bind.execute(sa.text(f"INSERT INTO fault_marks (pid, revision, event, at) "
                         f"VALUES (:pid, :rev, :event, {now})"),
                 {"pid": os.getpid(), "rev": revision, "event": event})


_under_way = {"revision": ""}  # the revision this process is in (for the gate)


def begin(revision: str) -> None:
    _under_way["revision"] = revision
    _journal(revision, "start")
    _row(revision, "start")


def end(revision: str) -> None:
    _row(revision, "end")
    _journal(revision, "end")


def pause() -> None:
    """Sleep HERD_FAULT_STEP seconds (default 0): the window a fault is timed to land in."""
    time.sleep(float(os.environ.get("HERD_FAULT_STEP", "0")))
    revision, _, gate = os.environ.get("HERD_FAULT_GATE", "").partition(":")
    if not gate or revision != _under_way["revision"]:
        return
    until = time.monotonic() + 120
    while os.path.exists(gate) and time.monotonic() < until:
        time.sleep(0.01)
