"""A wrapped migration command (``herd migrate -- CMD``) that never outlives herd's lock.

CMD runs in a process group of its own. herd returns only when no process of that group is
left: when CMD's main process has exited, stragglers it left behind get ``grace`` seconds,
then SIGTERM, then SIGKILL. When herd is asked to stop (:class:`~._signals.Interrupted`), it
forwards the signal to the whole group, waits ``grace`` seconds, kills what is left, and only
then lets the interruption go on (and so the lock go). If herd itself is killed, the kernel
kills CMD's main process too (Linux's parent-death signal), and the database frees herd's
session lock with its connection.

CMD's stderr passes through unchanged; its last lines are kept for the attempt log, where
:class:`Report` writes the command's own row (see "A wrapped command in the attempt log" in
docs/operators.md): the command (masked), how it ended, its stderr's last lines (masked),
which revisions it applied (the version table before and after) and which it did not reach.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from . import _defaults as defaults
from ._database import mask_text
from ._durations import format_seconds
from ._log import log
from ._signals import Interrupted, shielded

_PR_SET_PDEATHSIG = 1
_KILL_WAIT = 5.0
"""How long to wait for the kernel to clear a group after SIGKILL."""


@dataclass(frozen=True)
class Finished:
    """How a wrapped command ended."""

    returncode: int
    stderr_tail: tuple[str, ...]
    seconds: float


ROW = "command"
"""The attempt log's revision for a wrapped command's own row (like ``env.py`` for env.py)."""

_NOISE = ("[SQL:", "[parameters:", "(Background on this error", "Traceback (most recent")
_LINE_CHARS = 300
_TEXT_CHARS = 4000


def headline(tail: Sequence[str]) -> str:
    """The line of a command's last stderr lines that says what failed: the last unindented
    one that is not a traceback's header nor SQLAlchemy's [SQL: ...] / [parameters: ...] /
    Background link (a Python traceback ends with ``ExcType: message``); else the last."""
    lines = [line.rstrip() for line in tail if line.strip()]
    for line in reversed(lines):
        if not line[0].isspace() and not line.startswith(_NOISE):
            return line.strip()
    return lines[-1].strip() if lines else ""


@dataclass(frozen=True)
class Report:
    """What a wrapped command did, as the attempt log's command row tells it (its ``error``
    column). Every line is masked with :func:`~._database.mask_text`. Its last line is the
    summary: how it ended, its stderr's headline, what it applied and what it did not reach
    (revisions it did not reach get no row of their own)."""

    argv: Sequence[str]
    ending: str
    """'exited 0', 'exited 3', 'stopped by SIGTERM', 'not found'."""
    seconds: float | None
    tail: Sequence[str]
    applied: Sequence[str]
    left: Sequence[str]
    url: Any = None

    def summary(self) -> str:
        took = f" after {format_seconds(self.seconds)}" if self.seconds is not None else ""
        first = ("" if self.ending == "exited 0"  # a success's stderr is no error
                 else mask_text(headline(self.tail), self.url)[:_LINE_CHARS])
        parts = [f"{self.ending}{took}" + (f": {first}" if first else "")]
        parts.append(f"applied {', '.join(self.applied)}" if self.applied else "applied nothing")
        if self.left:
            parts.append(f"not reached: {', '.join(self.left)}")
        return "; ".join(parts)

    def text(self) -> str:
        """The command row's text: ``$ CMD``, the last stderr lines (indented), the summary."""
        head = f"$ {mask_text(shell_words(self.argv), self.url)}"
        summary = self.summary()
        lines = [f"  {mask_text(line, self.url)[:_LINE_CHARS]}" for line in self.tail
                 if line.strip()]
        while lines and len(head) + len(summary) + sum(len(x) + 1 for x in lines) > _TEXT_CHARS:
            lines.pop(0)
        middle = [f"stderr, last {len(lines)} line(s):", *lines] if lines else []
        return "\n".join([head, *middle, summary])


def shell_words(argv: Sequence[str]) -> str:
    """The command as one would type it (quoted where needed)."""
    return shlex.join(argv)


def run(argv: Sequence[str], *, env: Mapping[str, str], grace: float = defaults.COMMAND_GRACE,
        tail: int = defaults.STDERR_TAIL) -> Finished:
    """Run ``argv`` to the end (see the module docstring). Raises ``FileNotFoundError`` when
    the program does not exist, and :class:`~._signals.Interrupted` (after the group is
    gone) when herd was asked to stop."""
    began = time.monotonic()
    lines: collections.deque[str] = collections.deque(maxlen=tail)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with shielded():  # a signal before the group exists is raised once it does
            # preexec_fn and threads (the lease's heartbeat): the function only calls a
            # libc function resolved before the fork, and glibc resets its locks in the child
            proc = subprocess.Popen(list(argv), env=dict(env), stderr=subprocess.PIPE,
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent())  # noqa: PLW1509
            reader = threading.Thread(target=_tee, args=(proc.stderr, lines), daemon=True,
                                      name="herd-command-stderr")
            reader.start()
        returncode = proc.wait()
    except Interrupted as stop:
        if proc is None:
            raise
        with shielded():
            log.warning("%s: stopping the migration command %s (process group %d), killing "
                        "it after %.0f s", stop.name, argv[0], proc.pid, grace)
            _reap(proc, [(stop.signum, grace), (signal.SIGKILL, _KILL_WAIT)])
        raise
    with shielded():
        if _alive(proc.pid):
            log.warning("the migration command exited but left processes in its group %d; "
                        "stopping them before releasing the lock", proc.pid)
            _reap(proc, [(None, 1.0), (signal.SIGTERM, grace), (signal.SIGKILL, _KILL_WAIT)])
    reader.join(timeout=1.0)
    return Finished(returncode, tuple(lines), time.monotonic() - began)


def _tee(stream: IO[bytes] | None, lines: collections.deque[str]) -> None:
    if stream is None:
        return
    out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    for raw in iter(stream.readline, b""):
        if out is not None:
            out.write(raw)
            out.flush()
        else:
            sys.stderr.write(raw.decode(errors="replace"))
        lines.append(raw.decode(errors="replace").rstrip("\n"))
    stream.close()


def _reap(proc: subprocess.Popen[bytes], steps: list[tuple[int | None, float]]) -> None:
    """Until no process of ``proc``'s group is left: for each step send its signal (if any)
    to the group and wait up to its seconds."""
    group = proc.pid
    for signum, wait in steps:
        if signum is not None:
            _signal_group(group, signum)
        until = time.monotonic() + wait
        while True:
            proc.poll()
            _collect(group)
            if not _alive(group):
                return
            if time.monotonic() >= until:
                break
            time.sleep(0.05)
    log.error("process group %d is still there after SIGKILL", group)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _collect(group: int) -> None:
    """Reap the group's processes that are herd's own children (herd may be PID 1 in a
    container, where orphans are reparented to it)."""
    while True:
        try:
            pid, _ = os.waitpid(-group, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel SIGKILL the child when herd dies. The libc
    function is looked up here, before the fork, so the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # herd died between fork and prctl
            os._exit(137)

    return arm
