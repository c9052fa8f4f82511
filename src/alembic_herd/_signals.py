"""SIGTERM and SIGINT as an exception herd cleans up after.

Every rolling update and scale-down sends SIGTERM, then SIGKILL after a grace period. Inside
:func:`handling_signals` either signal raises :class:`Interrupted` in the main thread, so a
leader unwinds like after any error: the open transaction rolls back, the revision in
progress is recorded ``interrupted``, the lock is released, and the CLI prints one line and
exits ``128 + signal`` (143 for SIGTERM, 130 for SIGINT).

Only the CLI installs the handlers: an application that embeds the library owns its signals.
Bookkeeping that must not stop halfway (recording a revision, releasing the lock, stopping
a wrapped command) runs :func:`shielded`: a signal that arrives meanwhile is raised when the
block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal asked herd to stop. A ``BaseException``, like ``KeyboardInterrupt``, so that
    an env.py's ``except Exception`` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.detail = ""
        """What was stopped, as the leader says it (e.g. ``during revision s2, ...``)."""
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process the signal killed: 128 + its number."""
        return 128 + self.signum


class _Shield:
    """Counts nested :func:`shielded` blocks and keeps the first signal they deferred."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.depth -= 1
        if self.depth == 0 and self.pending is not None and exc is None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
        # with an exception on its way out, the signal stays pending for the next check


_shield = _Shield()


def shielded() -> _Shield:
    """Defer SIGTERM/SIGINT until the block ends (then raise :class:`Interrupted`)."""
    return _shield


def check() -> None:
    """Raise the deferred signal now, if one came (at a safe point between two steps)."""
    if _shield.pending is not None and _shield.depth == 0:
        signum, _shield.pending = _shield.pending, None
        raise Interrupted(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _shield.depth > 0:
        if _shield.pending is None:
            _shield.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def handling_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Interrupted` while the block runs, then put the
    previous handlers back. Outside the main thread (where Python cannot install handlers)
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
