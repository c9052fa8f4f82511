"""Wake-up by notification on PostgreSQL, and polling when a notification is lost."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd._database import create_engine
from alembic_herd._wakeup import Wakeup
from alembic_herd.locks import LockKey
from conftest import PROJECTS, render

CONFIG = str(PROJECTS / "herdset" / "alembic.ini")
KEY = LockKey.for_version_table("alembic_version", None, None)
HERD = str(Path(sys.executable).parent / "herd")


def test_the_leader_wakes_a_listening_waiter_and_no_other(pg: URL) -> None:
    """A waiter LISTENing on the lock's channel ends its pause on the leader's notification;
    one listening on another lock's channel sleeps its pause out (the control). The pause
    right after LISTEN ends at once (the look after it catches up on what LISTEN missed)."""
    engine = create_engine(pg)
    with engine.connect() as mine, engine.connect() as other:
        wakeup, control = Wakeup(mine, KEY), Wakeup(other, LockKey("herd:another_table"))
        wakeup.start()
        control.start()
        assert wakeup.listening and control.listening
        wakeup(60.0)  # a pause right after LISTEN would sleep all of it
        control(60.0)
        assert wakeup.caught_up and wakeup.news and not wakeup.notified
        leader = threading.Thread(target=alembic_herd.upgrade, args=(CONFIG,),
                                  kwargs={"url": pg})
        leader.start()
        wakeup(60.0)  # a lost notification would sleep all of it and fail below
        leader.join()
        control(0.5)
        assert wakeup.notified and not wakeup.caught_up
        assert not control.notified and not control.news
    engine.dispose()


def test_waiters_finish_by_polling_when_the_leader_never_notifies(pg: URL,
                                                                  tmp_path: Path) -> None:
    """Plain Alembic migrates under herd's lock and releases it without a NOTIFY (as a lost
    notification would look): every waiting `herd migrate` process still finishes, exit 0."""
    admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    engine = create_engine(pg)
    with admin.connect() as holder, engine.connect() as listener:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": KEY.as_int64()})
        heard = Wakeup(listener, KEY)
        heard.start()
        procs = [subprocess.Popen([HERD, "migrate", "-c", CONFIG, "--url", render(pg)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        try:
            waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND application_name LIKE 'herd %'")
            deadline = time.monotonic() + 60
            while holder.scalar(waiting) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert all(p.poll() is None for p in procs), "a replica did not wait for the lock"
            config = Config(CONFIG)
            config.set_main_option("sqlalchemy.url", render(pg).replace("%", "%%"))
            command.upgrade(config, "head")
            heard(0.0)
            assert not heard.notified, "the fault did not land: someone notified"
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": KEY.as_int64()})
            outcomes = [p.communicate(timeout=120) for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    engine.dispose()
    admin.dispose()
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in outcomes]


def test_through_a_transaction_pooler_a_waiter_polls_instead_of_listening(pg: URL) -> None:
    """Through PgBouncer in transaction mode LISTEN is lost (no notification would ever
    arrive): the waiter tells the pooler by the backend pid announced at startup, does not
    LISTEN, and polls on the short pooled backoff, and `wait_until_current` through it sees
    the leader's end. The control: the same waiter on a direct connection listens."""
    import shutil

    from alembic_herd import _defaults
    from faults.infra import PgBouncer

    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        raise AssertionError("pgbouncer is not installed (apt-get install pgbouncer; .ci/run "
                             "does)")
    user = pg.username or "postgres"
    host = str(pg.query.get("host") or pg.host or "127.0.0.1")  # the trusted Unix socket
    bouncer = PgBouncer(host, int(pg.query.get("port") or pg.port or 5432),  # type: ignore[arg-type]
                        {user: pg.password or "x"})
    try:
        pooled_url = bouncer.url(user, pg.password or "x", pg.database or "")
        direct, pooled = create_engine(pg), create_engine(pooled_url)
        with direct.connect() as conn:
            control = Wakeup(conn, KEY)
            control.start()
            assert control.listening and not control.pooled
        with pooled.connect() as conn:
            wakeup = Wakeup(conn, KEY)
            wakeup.start()
            assert wakeup.pooled and not wakeup.listening
            wait = wakeup.waits(_defaults.POLL_INTERVAL)
            from tenacity import RetryCallState

            state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = 30  # the backoff has reached its cap
            assert _defaults.POOLED_POLL_JITTER * _defaults.POOLED_POLL_INTERVAL \
                <= wait(state) <= _defaults.POOLED_POLL_INTERVAL
        seen: list[object] = []
        waiter = threading.Thread(target=lambda: seen.append(alembic_herd.wait_until_current(
            CONFIG, url=pooled_url, timeout=120)))
        waiter.start()
        assert alembic_herd.upgrade(CONFIG, url=pg).action == "migrated"
        waiter.join(130)
        assert [getattr(o, "action", o) for o in seen] in (["waited"], ["current"]), seen
        direct.dispose()
        pooled.dispose()
    finally:
        bouncer.close()


@pytest.mark.parametrize("per_step", [False, True], ids=["one-transaction", "per-migration"])
def test_a_waiter_returns_on_the_commit_before_the_leader_releases(
        pg: URL, per_step: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader NOTIFYs as soon as the plan's last revision has committed, before its
    attempt-log bookkeeping and its release: a replica waiting for the lock verifies the
    heads and returns 'waited' while the leader still holds the lock. The leader's release
    is held back until the waiter has returned (bounded); a waiter woken only by the
    release (or by polling, which never reads the heads while the lock is held on a
    LISTENing connection) could not return first. Both replicas call `upgrade`; whichever
    takes the lock leads."""
    from alembic_herd import _wakeup
    from alembic_herd.locks.postgresql import AdvisoryLock

    monkeypatch.setenv("HERD_TEST_TPM", "1" if per_step else "0")
    admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    listening = threading.Semaphore(0)
    start = Wakeup.start

    def counted_start(self: Wakeup) -> None:
        first = not self._started
        start(self)
        if first and self.listening:
            listening.release()

    monkeypatch.setattr(_wakeup.Wakeup, "start", counted_start)
    returned = threading.Event()
    held_at_return: list[bool] = []
    release = AdvisoryLock.release

    def late_release(self: AdvisoryLock) -> None:
        held_at_return.append(returned.wait(120))  # a bound, not a measurement
        release(self)

    monkeypatch.setattr(AdvisoryLock, "release", late_release)
    outcomes: list[object] = []

    def replica() -> None:
        outcome = alembic_herd.upgrade(CONFIG, url=pg, lock_timeout="300s")
        outcomes.append(outcome)
        if outcome.action == "waited":
            returned.set()

    with admin.connect() as holder:  # both replicas wait (and LISTEN) before either leads
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": KEY.as_int64()})
        threads = [threading.Thread(target=replica) for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert listening.acquire(timeout=120), "a replica did not start waiting"
        holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": KEY.as_int64()})
        for thread in threads:
            thread.join(300)
        heads = holder.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    admin.dispose()
    assert sorted(str(getattr(o, "action", o)) for o in outcomes) == ["migrated", "waited"], \
        outcomes
    assert held_at_return == [True], "the waiter returned only once the lock was released"
    assert [h for (h,) in heads] == ["d4"]


def test_a_commit_between_the_first_look_and_listen_is_not_missed(
        pg: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter LISTENs only once its first try at the lock failed, after it read the heads;
    a leader that commits in between notifies before anyone listens. Here plain Alembic
    (no NOTIFY) brings the database to head exactly there, while another session keeps
    herd's lock: the waiter must re-read the heads right after LISTEN and return 'waited'
    with the lock still held. Without that look it would only try the held lock (a
    LISTENing waiter reads the heads after a notification) until its lock timeout."""
    from alembic_herd import _wakeup

    admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    start = Wakeup.start
    migrated: list[bool] = []

    def commit_then_listen(self: Wakeup) -> None:
        if not self._started:  # the leader's commit lands before this waiter's LISTEN
            config = Config(CONFIG)
            config.set_main_option("sqlalchemy.url", render(pg).replace("%", "%%"))
            command.upgrade(config, "head")
            migrated.append(True)
        start(self)

    monkeypatch.setattr(_wakeup.Wakeup, "start", commit_then_listen)
    with admin.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": KEY.as_int64()})
        try:
            outcome = alembic_herd.upgrade(CONFIG, url=pg, lock_timeout="15s")
        finally:
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": KEY.as_int64()})
    admin.dispose()
    assert migrated == [True]
    assert outcome.action == "waited", outcome


def test_a_look_at_the_heads_compiles_its_statement_once(tmp_path: Path) -> None:
    """A waiter reads the heads at every look: the statement is compiled at the first and
    taken from SQLAlchemy's cache after it (2.x keys that cache on the Table object, so a
    new Table per look compiled the SELECT every time). Counted: the engine's cache."""
    from alembic_herd._database import create_engine
    from alembic_herd._environment import load_environment
    from alembic_herd._heads import Pending

    url = f"sqlite:///{tmp_path / 'looks.db'}"
    alembic_herd.upgrade(CONFIG, url=url)
    pending = Pending(load_environment(CONFIG, url=url), "head", allow_ahead=False)
    engine = create_engine(sa.engine.make_url(url))
    with engine.connect() as conn:
        assert pending.read(conn) == (("d4",), ())
        cache = conn.engine._compiled_cache
        assert cache is not None
        compiled = len(cache)
        for _ in range(5):
            assert pending.read(conn) == (("d4",), ())
        assert len(cache) == compiled
    engine.dispose()


def test_the_library_path_never_imports_the_fast_lane(tmp_path: Path) -> None:
    """Only the `herd` command's fast lane asks for a stamp: a library caller that migrates
    and then waits (a woken waiter's path) does not import it. Control: the command's
    entry point (the fast lane itself) is what imports it."""
    url = f"sqlite:///{tmp_path / 'lane.db'}"
    code = (f"import sys, alembic_herd; alembic_herd.upgrade({CONFIG!r}, url={url!r}); "
            f"alembic_herd.wait_until_current({CONFIG!r}, url={url!r}); "
            "print('alembic_herd._fastlane' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1:] == ["False"], out
    control = subprocess.run([sys.executable, "-c", "import sys, alembic_herd._fastlane; "
                              "print('alembic_herd._fastlane' in sys.modules)"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert control == ["True"]


@pytest.mark.parametrize(("mode", "budget", "longest"), [("pooled", 0.8, 1.5),
                                                         ("listening", 0.5, None)])
def test_a_steady_waiter_keeps_its_load_budget_and_looks_often_enough(
        tmp_path: Path, mode: str, budget: float, longest: float | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17's budgets while waiting, once the backoff has reached its cap. LISTENing:
    at most 0.5 statements per second per waiter (a notification ends the wait). Through
    a pooler no notification arrives, and readiness within 2 s of the leader's end is the
    goal that wins: a look at least every 1.5 s (0.5 s left for the look itself and the
    queue), at most 0.8 statements per second (the heads at each look, the attempt log
    every POOLED_LOG_EVERY s). `wait_until_current` waits on a database that never moves,
    on a fake clock that each pause advances by its length (no real time passes); the
    statements are counted (SQLite stands in for the server: the counts are herd's, not the
    driver's)."""
    from alembic_herd import _durations, _wakeup
    from alembic_herd.errors import WaitTimeoutError

    url = f"sqlite:///{tmp_path / 'steady.db'}"
    alembic_herd.upgrade(CONFIG, url=url, target="a1")  # herd's tables, and 3 pending
    clock = [1000.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    def start(self: Wakeup) -> None:
        self._started = True
        if mode == "pooled":
            self.pooled = True
        else:
            self._raw = object()  # listening: a pause ends silently (no notification)

    def pause(self: Wakeup, seconds: float) -> None:
        self.start()
        self.notified = False
        clock[0] += seconds

    monkeypatch.setattr(_durations, "time", FakeTime)
    monkeypatch.setattr(_wakeup.Wakeup, "start", start)
    monkeypatch.setattr(_wakeup.Wakeup, "__call__", pause)
    stamps: list[float] = []

    def count(*_args: object) -> None:
        stamps.append(clock[0])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        with pytest.raises(WaitTimeoutError):
            alembic_herd.wait_until_current(CONFIG, url=url, timeout="1260s")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    began = clock[0] - 1260 + 60  # steady: from one minute in to the end
    steady = [t for t in stamps if t >= began]
    rate = len(steady) / 1200
    assert 0.2 < rate <= budget, (mode, rate)
    if longest is not None:  # how late a waiter can be: the longest gap between two looks
        gap = max(b - a for a, b in itertools.pairwise(steady))
        assert gap <= longest, (mode, gap)
