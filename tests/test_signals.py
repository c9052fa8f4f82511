"""SIGTERM/SIGINT handling and wrapped commands that never outlive herd.

The process tests run a small herd-side program (``_command.run`` under
``handling_signals``) as a real process, around a command that forks a grandchild and writes
both pids to a file; the test signals the herd-side process and then checks, with the kernel's
process table, which of them is still alive. The control runs the same command the way herd
used to (``subprocess.run``) and shows the command outliving herd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from alembic_herd._signals import Interrupted, check, handling_signals, shielded
from conftest import render

HERD_SIDE = """
import json, os, subprocess, sys
from alembic_herd import _command
from alembic_herd._signals import Interrupted, handling_signals
mode, grace, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
if mode == "plain":  # the control: how herd ran commands before (no handlers, no group)
    sys.exit(subprocess.run(argv, check=False).returncode)
with handling_signals():
    try:
        done = _command.run(argv, env=os.environ, grace=grace)
        print(json.dumps({"rc": done.returncode, "tail": done.stderr_tail}), flush=True)
    except Interrupted as stop:
        print(json.dumps({"interrupted": stop.name}), flush=True)
        sys.exit(stop.exit_code)
"""

# The wrapped command: a shell that forks a long sleep, writes "shell_pid sleep_pid", and
# waits for it. IGNORE_TERM makes the shell (and so its sleep) ignore SIGTERM.
COMMAND = """
[ -n "$IGNORE_TERM" ] && trap '' TERM
sleep 60 &
echo "$$ $!" > "$PIDS"
echo "working" >&2
wait
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def start(mode: str, tmp_path: Path, *, grace: float = 5.0, ignore_term: bool = False
          ) -> tuple[subprocess.Popen[str], list[int]]:
    pids = tmp_path / "pids"
    env = {**os.environ, "PIDS": str(pids)}
    if ignore_term:
        env["IGNORE_TERM"] = "1"
    proc = subprocess.Popen([sys.executable, "-c", HERD_SIDE, mode, str(grace), "sh", "-c",
                             COMMAND], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    until = time.monotonic() + 30
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < until, "the wrapped command never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    return proc, [int(p) for p in pids.read_text().split()]


def wait_dead(pids: list[int], seconds: float = 10.0) -> list[int]:
    until = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < until:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def stop_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_forwarded_and_herd_exits_after_the_whole_group(
        signum: int, tmp_path: Path) -> None:
    """SIGTERM/SIGINT reach every process of the command; herd exits 128+signal only once
    none of them is alive."""
    proc, pids = start("herd", tmp_path)
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        still = [p for p in pids if alive(p)]
        assert proc.returncode == 128 + signum, err
        assert json.loads(out.splitlines()[-1]) == {"interrupted": signal.Signals(signum).name}
        assert still == [], f"processes of the command outlived herd: {still}"
    finally:
        stop_all(pids)


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed after the grace period, before herd
    exits."""
    proc, pids = start("herd", tmp_path, grace=1.0, ignore_term=True)
    try:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        still = [p for p in pids if alive(p)]
        assert proc.returncode == 143, err
        assert still == [], f"processes of the command outlived herd: {still}"
        assert "stopping the migration command" in err
    finally:
        stop_all(pids)


def test_control_without_the_group_the_command_outlives_herd(tmp_path: Path) -> None:
    """The control: run as herd used to (subprocess.run, no group, no forwarding), SIGTERM
    stops herd and leaves the command running - what the test above would catch."""
    proc, pids = start("plain", tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # the command still holds the pipes: no communicate()
        assert proc.returncode == -signal.SIGTERM
        assert all(alive(p) for p in pids), "the control should leave the command running"
    finally:
        stop_all(pids)


def test_sigkill_to_herd_takes_the_command_down(tmp_path: Path) -> None:
    """If herd is SIGKILLed (no chance to clean up), the kernel kills the command's main
    process (parent-death signal)."""
    proc, pids = start("herd", tmp_path)
    shell = pids[0]
    try:
        proc.kill()
        proc.wait(timeout=30)  # the orphaned sleep still holds the pipes: no communicate()
        assert wait_dead([shell]) == [], "the command's main process outlived a SIGKILLed herd"
    finally:
        stop_all(pids)


def test_stragglers_are_stopped_before_run_returns(tmp_path: Path) -> None:
    """A command that exits but leaves a background process in its group: run() returns its
    exit code and stderr tail only after that process is gone."""
    from alembic_herd import _command

    pid_file = tmp_path / "bg"
    done = _command.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo failed >&2; "
                         "exit 4"], env=os.environ, grace=1.0)
    assert done.returncode == 4
    assert done.stderr_tail[-1] == "failed"
    assert not alive(int(pid_file.read_text()))


def test_a_missing_program_raises_file_not_found() -> None:
    """A command that does not exist is FileNotFoundError, for the caller to explain."""
    from alembic_herd import _command

    with pytest.raises(FileNotFoundError):
        _command.run(["herd-no-such-program"], env=os.environ)


def test_shielded_defers_a_signal_to_the_end_of_the_block() -> None:
    """Inside shielded() a signal is held back and raised when the block ends."""
    with handling_signals():
        reached_end = False
        with pytest.raises(Interrupted) as stop, shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            reached_end = True
        assert reached_end
        assert stop.value.exit_code == 143


def test_a_signal_during_a_failing_shielded_block_stays_pending() -> None:
    """An error leaving a shielded block is not replaced by the signal; check() raises it at
    the next safe point."""
    with handling_signals():
        with pytest.raises(ValueError), shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise ValueError("the real error")
        with pytest.raises(Interrupted) as stop:
            check()
        assert stop.value.exit_code == 130
        check()  # raised once only


def test_handlers_are_restored_afterwards() -> None:
    """handling_signals() puts the previous handlers back."""
    before = signal.getsignal(signal.SIGTERM)
    with handling_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_waiting_replica_stops_at_once_with_the_documented_code(
        signum: int, pg: URL) -> None:
    """`herd wait` on a database that is not current exits 128+signal as soon as it is
    signalled, with one 'herd: error:' line naming the signal (not after its timeout)."""
    herdset = str(Path(__file__).parent / "projects" / "herdset" / "alembic.ini")
    proc = subprocess.Popen([sys.executable, "-m", "alembic_herd.cli", "wait", "-c", herdset,
                             "--url", render(pg), "--timeout", "10m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first 'waiting for the database' report
    assert "waiting" in line, line
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    errors = [x for x in err.splitlines() if x.startswith("herd: error:")]
    assert proc.returncode == 128 + signum, err
    assert errors == [f"herd: error: stopped by {signal.Signals(signum).name}"]
    assert "Traceback" not in err


def test_sigterm_to_a_downgrade_mid_revision_is_recorded_and_frees_the_lock(
        pg: URL, tmp_path: Path) -> None:
    """`herd downgrade base` SIGTERMed inside f1's downgrade (proved: its row deleted, the
    revision 'reverting') exits 143 with one line naming the signal; the undo of f1 rolled
    back (the row is back, f1 still in the version table), the attempt log says f2
    'reverted' and f1 'interrupted', and the lock is free at once: the next downgrade
    finishes within a 5 s lock timeout."""
    import sqlalchemy as sa

    import alembic_herd

    config = str(Path(__file__).parent / "projects" / "fencing" / "alembic.ini")
    engine = sa.create_engine(pg)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE seeded (name VARCHAR(20) NOT NULL)"))

    def query(sql: str) -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]

    try:
        alembic_herd.upgrade(config, url=render(pg), lock_timeout=30)
        mark = tmp_path / "mark"
        proc = subprocess.Popen(
            [sys.executable, "-m", "alembic_herd.cli", "downgrade", "-c", config, "base",
             "--yes", "--url", render(pg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "HERD_TEST_MARK": str(mark), "HERD_TEST_TPM": "1"})
        try:
            until = time.monotonic() + 60
            while not (mark.exists() and query(
                    "SELECT 1 FROM herd_history WHERE revision = 'f1' AND status = 'reverting'")):
                assert proc.poll() is None and time.monotonic() < until, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143, err
        errors = [x for x in err.splitlines() if x.startswith("herd: error:")]
        assert len(errors) == 1 and errors[0].startswith("herd: error: stopped by SIGTERM"), err
        assert "Traceback" not in err
        assert query("SELECT count(*) FROM seeded") == [(1,)]
        assert query("SELECT version_num FROM alembic_version") == [("f1",)]
        assert query("SELECT revision, status FROM herd_history WHERE status IN "
                     "('reverted', 'interrupted', 'reverting') ORDER BY id") == [
            ("f2", "reverted"), ("f1", "interrupted")]
        outcome = alembic_herd.downgrade(config, "base", url=render(pg), lock_timeout=5,
                                         yes=True)
        assert outcome.action == "downgraded"
        assert query("SELECT count(*) FROM seeded") == [(0,)]
    finally:
        engine.dispose()
