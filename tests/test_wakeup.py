"""Wake-up by notification on PostgreSQL, and polling when a notification is lost."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

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
    one listening on another lock's channel sleeps its pause out (the control)."""
    engine = create_engine(pg)
    with engine.connect() as mine, engine.connect() as other:
        wakeup, control = Wakeup(mine, KEY), Wakeup(other, LockKey("herd:another_table"))
        wakeup.start()
        control.start()
        assert wakeup.listening and control.listening
        leader = threading.Thread(target=alembic_herd.upgrade, args=(CONFIG,),
                                  kwargs={"url": pg})
        leader.start()
        wakeup(60.0)  # a lost notification would sleep all of it and fail below
        leader.join()
        control(0.5)
        assert wakeup.notified
        assert not control.notified
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
            assert 0.75 * _defaults.POOLED_POLL_INTERVAL <= wait(state) \
                <= _defaults.POOLED_POLL_INTERVAL
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
