"""A wrapped migration command (``herd migrate -- CMD``) that never outlives herd's lock.

CMD runs in a process group of its own. herd returns only when no process of that group is
left: when CMD's main process has exited, stragglers it left behind get ``grace`` seconds,
then SIGTERM, then SIGKILL. When herd is asked to stop (:class:`~._signals.Interrupted`), it
forwards the signal to the whole group, waits ``grace`` seconds, kills what is left, and only
then lets the interruption go on (and so the lock go). If herd itself is killed, the kernel
kills CMD's main process too (Linux's parent-death signal), and the database frees herd's
session lock with its connection.

CMD's stderr passes through unchanged; its last lines are kept for the attempt log.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from . import _defaults as defaults
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
