"""Waiting with one deadline: connecting while the server is not ready, and polling.

Both use tenacity with full-jitter exponential backoff, so a herd that starts together
spreads out instead of retrying in lockstep. Polling may pause on something better than a
sleep: a :class:`~._wakeup.Wakeup` blocks on the database's notifications for as long as the
pause would have lasted, and ends it early when the leader commits or finishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from tenacity import RetryCallState

from ._database import display, driver_message, is_transient, unavailable
from ._durations import Deadline, format_seconds
from ._log import event
from ._tables import refused_at_connect

T = TypeVar("T")
Wait: TypeAlias = "Callable[[RetryCallState], float]"

FIRST_PAUSE = 0.05
"""The backoff's first step; it doubles up to the caller's cap."""


class Pause(Protocol):
    """How a poller waits between two looks (a plain sleep, or a :class:`~._wakeup.Wakeup`)."""

    def waits(self, cap: float) -> Wait:
        """The backoff: how long to wait after each look (a tenacity wait strategy)."""

    def __call__(self, seconds: float) -> None:
        """Wait up to ``seconds``."""


class Sleep:
    """A plain sleep with full-jitter exponential backoff (50 ms doubling up to the cap)."""

    def waits(self, cap: float) -> Wait:
        from tenacity import wait_random_exponential

        return wait_random_exponential(multiplier=FIRST_PAUSE, max=cap)

    def __call__(self, seconds: float) -> None:
        time.sleep(seconds)


def stop_at(deadline: Deadline) -> Callable[[RetryCallState], bool]:
    return lambda _state: deadline.expired()


def _within(deadline: Deadline, wait: Wait) -> Wait:
    return lambda state: min(wait(state), deadline.remaining())


def connect(engine: Engine, deadline: Deadline) -> Connection:
    """A connection, retrying transient failures (server starting, too many connections)
    with jittered backoff until ``deadline``; credentials and unknown databases fail at once.
    The first try runs without the retry machinery (tenacity is imported only after a
    transient failure): the common case, a server that answers, pays nothing for it."""
    began = time.monotonic()
    try:
        return engine.connect()
    except DBAPIError as exc:
        if not is_transient(exc) or deadline.expired():
            refused = refused_at_connect(exc, engine.url)  # no privilege on this database
            if refused is not None:
                raise refused from exc
            raise unavailable(exc, engine.url,
                              tried=time.monotonic() - began if is_transient(exc) else None
                              ) from exc
        first: list[DBAPIError] = [exc]
    from tenacity import Retrying, retry_if_exception, wait_random_exponential

    said = False

    def attempt() -> Connection:
        if first:  # the first try's failure, through the same backoff and message
            raise first.pop()
        return engine.connect()

    def before_sleep(state: RetryCallState) -> None:
        nonlocal said
        exc = state.outcome.exception() if state.outcome else None
        if not said and exc is not None:
            event("connect_retry", "waiting for database %s to accept connections (%s); "
                  "giving up in %s", display(engine.url), driver_message(exc, engine.url),
                  format_seconds(deadline.remaining()), level=logging.WARNING)
            said = True

    retrying = Retrying(
        stop=stop_at(deadline),
        wait=_within(deadline, wait_random_exponential(multiplier=0.1, max=3.0)),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except DBAPIError as exc:
        refused = refused_at_connect(exc, engine.url)  # no privilege on this database
        if refused is not None:
            raise refused from exc
        raise unavailable(exc, engine.url,
                          tried=time.monotonic() - began if is_transient(exc) else None) from exc


def poll(step: Callable[[], T | None], deadline: Deadline, cap: float,
         pause: Pause | None = None) -> T | None:
    """Call ``step`` until it returns a value or ``deadline`` passes (then ``None``); between
    two calls wait as ``pause`` says (default: a jittered sleep capped at ``cap``)."""
    from tenacity import Retrying, retry_if_result

    pause = pause or Sleep()
    retrying = Retrying(
        stop=stop_at(deadline),
        wait=_within(deadline, pause.waits(cap)),
        retry=retry_if_result(lambda result: result is None),
        retry_error_callback=lambda _state: None,
        sleep=pause,
    )
    return retrying(step)
