"""The attempt log's notes on lock waits: what a leader writes when a revision is rolled
back after its lock wait timed out, and how a waiting replica reads it back ("leader
retrying: attempt k of n, blocked by ..."). Standard library only: the fast lane's waiting
room (:mod:`._lanewait`) reads them too."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from ._durations import format_seconds

_NOTE = re.compile(r"lock wait timeout \(attempt (\d+) of (\d+)[^)]*\): (.*)$")


class Row(Protocol):
    """What :func:`retrying` reads of an attempt-log row."""

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str | None: ...


def note(attempt: int, attempts: int, waited: float, blocker: str | None) -> str:
    """The attempt log's error for a revision rolled back after a lock wait timed out
    (:func:`retrying` reads it back)."""
    return (f"lock wait timeout (attempt {attempt} of {attempts}, waited "
            f"{format_seconds(waited)}): {blocked_by(blocker)}")


def blocked_by(blocker: str | None) -> str:
    return f"blocked by {blocker}" if blocker else "blocker not seen"


def retrying(rows: Sequence[Row]) -> str | None:
    """'leader retrying: attempt k of n, blocked by ...' when the newest attempt-log rows
    (``rows``, newest first) show a leader retrying after a lock wait timeout."""
    for index, row in enumerate(rows):
        found = _NOTE.match(row.error or "") if row.status == "rolled back" else None
        if found:
            done, attempts, blocker = int(found[1]), int(found[2]), found[3]
            now = done + 1 if index else done
            verb = "" if index else " timed out"
            return f"leader retrying: attempt {now} of {attempts}{verb}, {blocker}"
        if row.status != "running":
            return None
    return None
