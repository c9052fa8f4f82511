"""Waiting with one deadline: connecting while the server is not ready, and polling.

Both back off exponentially with full jitter, so a herd that starts together spreads out
instead of retrying in lockstep. Polling may pause on something better than a sleep: a
:class:`~._wakeup.Wakeup` blocks on the database's notifications for as long as the pause
would have lasted, and ends it early when the leader commits or finishes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ._database import display, driver_message, is_transient, unavailable
from ._durations import Deadline, format_seconds
from ._log import event

T = TypeVar("T")

FIRST_PAUSE = 0.05
"""The backoff's first step; it doubles up to the caller's cap."""


class Pause(Protocol):
    """How a poller waits between two looks (a plain sleep, or a :class:`~._wakeup.Wakeup`)."""

    def backoff(self, attempt: int, cap: float) -> float:
        """How long to wait after ``attempt`` looks."""

    def __call__(self, seconds: float) -> None:
        """Wait up to ``seconds``."""


class Sleep:
    """A plain sleep with full-jitter exponential backoff (50 ms doubling up to the cap)."""

    def backoff(self, attempt: int, cap: float) -> float:
        return random.uniform(0, min(cap, FIRST_PAUSE * 2 ** min(attempt - 1, 30)))

    def __call__(self, seconds: float) -> None:
        time.sleep(seconds)


def connect(engine: Engine, deadline: Deadline) -> Connection:
    """A connection, retrying transient failures (server starting, too many connections)
    with jittered backoff until ``deadline``; credentials and unknown databases fail at once."""
    began = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return engine.connect()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise unavailable(exc, engine.url) from exc
            if deadline.expired():
                raise unavailable(exc, engine.url, tried=time.monotonic() - began) from exc
            if attempt == 1:
                event("connect_retry", "waiting for database %s to accept connections (%s); "
                      "giving up in %s", display(engine.url), driver_message(exc, engine.url),
                      format_seconds(deadline.remaining()), level=logging.WARNING)
            # 0.1 s doubling up to 3 s, never past the deadline
            time.sleep(min(random.uniform(0, min(3.0, 0.1 * 2 ** min(attempt - 1, 30))),
                           deadline.remaining()))


def poll(step: Callable[[], T | None], deadline: Deadline, cap: float,
         pause: Pause | None = None) -> T | None:
    """Call ``step`` until it returns a value or ``deadline`` passes (then ``None``); between
    two calls wait as ``pause`` says (default: a jittered sleep capped at ``cap``)."""
    pause = pause or Sleep()
    attempt = 0
    while True:
        attempt += 1
        result = step()
        if result is not None or deadline.expired():
            return result
        pause(min(pause.backoff(attempt, cap), deadline.remaining()))
