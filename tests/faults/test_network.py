"""Scenario 3: the leader is cut off from the database in the middle of revision m2.

Three faults, three different truths:

* DROP (a TCP proxy aborts the leader's connections): the server sees the sessions end at
  once and frees the lock; the leader's transaction rolls back; the leader connects again
  and the herd finishes.
* FREEZE (the proxy stops forwarding but keeps both sockets open): to the server the
  leader is a live, silent peer - its kernel answers every keepalive probe - so the lock
  stays held for the whole freeze and no one else migrates; after the thaw the leader goes
  on and the herd finishes. (A hung leader is bounded by the waiters' lock timeout.)
* PARTITION (the leader runs in a network namespace whose link goes down: packets vanish,
  no FIN, no RST): the server's TCP keepalives, which herd sets on its lock session and on
  env.py's migration session (idle 10 s, interval 5 s, 3 probes), drop both sessions after
  at most 10 + 5 * 3 = 25 s of silence; the lock is freed, the migration's transaction
  rolls back and a waiter finishes the job. When the link comes back, the old leader finds
  its sessions gone and stops before starting another revision (fencing).

Each trial brings its fault on as soon as the leader's journal mark says it started m2
(holding the lock), and first proves the fault landed there: a drop or a partition cut the
leader's run of m2 (it never ended), a freeze spanned it; a partition also made the host's
end of the link drop packets. A trial where it did not is run again (bounded); one that
never lands fails. Then, in every case, the committed marks show each revision once and no
two processes' committed runs overlap in time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from alembic_herd._defaults import KEEPALIVES

from .conftest import PostgresFixture
from .infra import Partition, Proxy, fault_server, partition_available
from .trials import (
    BOUND,
    Herd,
    Replica,
    Run,
    check_consistent,
    failures,
    history_overlaps,
    holder_pid,
    inspect_database,
    kill,
    leaks,
    record,
    rows,
    tally,
    until_landed,
)

STEP = 0.5
OTHERS = 3
KEEPALIVE_BOUND = KEEPALIVES[0] + KEEPALIVES[1] * KEEPALIVES[2]  # 25 s from herd's settings
MARGIN = 30.0  # generous: a loaded 2-core machine, probes scheduled by the server's kernel


def until(condition: Any, what: str, bound: float = BOUND, every: float = 0.02) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < bound, f"gave up waiting: {what}"
        time.sleep(every)
    return time.monotonic() - began


def start_herd(herd: Herd, url: URL, leader_url: URL, admin: URL,
               prefix: list[str] | None = None) -> tuple[Replica, list[Replica]]:
    """A leader released alone (through ``leader_url``, under ``prefix``) and OTHERS
    replicas released behind it once its journal says it started m2 and it holds the lock:
    the fault comes next, inside m2."""
    leader = herd.add("herd", leader_url, "--timeout", "180", prefix=prefix or [],
                      label="leader")
    others = [herd.add("herd", url, "--timeout", "180", label="replica")
              for _ in range(OTHERS)]
    herd.ready()
    herd.release([leader])
    herd.wait_for_run("m2", leader.pid)
    assert holder_pid(admin) == leader.pid
    herd.release(others)
    return leader, others


def leader_in_m2(herd: Herd, leader: Replica) -> Run:
    """The leader's first run of m2, from the journal (the herd has finished)."""
    return next(run for run in herd.runs if run.pid == leader.pid and run.revision == "m2")


def after_fault(facts: Any, leader: Replica, fault_at: datetime) -> list[str]:
    """Fencing: the cut-off leader started no revision and committed nothing after the
    fault."""
    problems = [f"the cut-off leader started {h['revision']} after the fault"
                for h in facts.history
                if h["pid"] == leader.pid and h["started"].astimezone(UTC) > fault_at]
    return problems


@pytest.fixture(scope="module")
def proxied(real_pg: PostgresFixture) -> Iterator[tuple[PostgresFixture, Proxy]]:
    proxy = Proxy(real_pg.host, real_pg.port)
    yield real_pg, proxy
    proxy.close()


def drop_trial(pg: PostgresFixture, proxy: Proxy, tpm: bool, secret: str) -> dict[str, Any]:
    with pg.database() as url:
        admin = pg.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        leader, others = start_herd(herd, url, pg.url(url.database or "", "127.0.0.1",
                                                      proxy.port), admin)
        fault_at = datetime.now(UTC)
        dropped = proxy.drop()
        freed = until(lambda: holder_pid(admin) != leader.pid, "the lock to be freed",
                      every=0.005)
        replicas = herd.finish()
        landed = dropped > 0 and leader_in_m2(herd, leader).cut_by(fault_at.timestamp())
        facts = inspect_database(url)
        problems = check_consistent(facts, stopped={leader.pid})
        problems += history_overlaps(facts.history)
        problems += [f"{r.label} {r.pid} exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                     for r in replicas if r.returncode != 0]
        return {"tpm": tpm, "landed": landed,
                "fault": f"{dropped} connections dropped inside m2" if landed else
                f"{dropped} connections dropped, the leader's m2 not cut",
                "connections_dropped": dropped, "lock_freed_seconds": round(freed, 3),
                "leader": leader.report.get("action", leader.report.get("type")),
                "leader_reconnected": "connecting again" in leader.stderr,
                "others": [r.report.get("action") for r in others],
                "problems": problems + after_fault(facts, leader, fault_at),
                "leaks": leaks(secret, herd.outputs)}


@pytest.mark.parametrize("trials", [pytest.param(1, id="fast"),
                                    pytest.param(6, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_dropped_leader_connections_free_the_lock_at_once_and_the_herd_finishes(
        trials: int, proxied: tuple[PostgresFixture, Proxy], secret: str) -> None:
    """When a proxy aborts the leader's connections mid-revision, the server frees the lock
    at once, the leader's transaction rolls back, the leader reconnects, and every replica
    ends ready with each revision applied once and no overlapping runs."""
    pg, proxy = proxied
    results = [until_landed(partial(drop_trial, pg, proxy, n % 2 == 1, secret))
               for n in range(trials)]
    record(f"network-drop-{'full' if trials > 1 else 'fast'}", {
        "backend": "postgresql at HERD_TEST_POSTGRES_URL (else the suite's own) via a "
                   "loopback TCP proxy", **tally(results),
        "lock_freed_seconds_max": max(r["lock_freed_seconds"] for r in results),
        "checks": ["fault landed: the proxy aborted the leader's connections while it held "
                   "the lock, and its run of m2 never ended (journal)",
                   "every replica exit 0, the leader after reconnecting", "at head",
                   "each revision's committed marks once, no overlaps",
                   "no revision started by the cut-off leader after the fault",
                   "password never printed"],
        "trials_detail": results})
    assert not failures(results), failures(results)


FREEZE = 8.0


def freeze_trial(pg: PostgresFixture, proxy: Proxy, secret: str) -> dict[str, Any]:
    with pg.database() as url:
        admin = pg.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP)})
        leader, others = start_herd(herd, url, pg.url(url.database or "", "127.0.0.1",
                                                      proxy.port), admin)
        frozen_at = time.time()
        proxy.freeze()
        try:
            began, samples, held = time.monotonic(), 0, 0
            while time.monotonic() - began < FREEZE:
                samples += 1
                held += holder_pid(admin) == leader.pid
                time.sleep(0.25)
            migrating_during_freeze = [r for r in others if r.proc.poll() is not None]
        finally:
            thawed_at = time.time()
            proxy.thaw()
        thawed = time.monotonic()
        replicas = herd.finish()
        m2 = leader_in_m2(herd, leader)
        landed = m2.active_at(frozen_at) and m2.active_at(thawed_at)
        facts = inspect_database(url)
        problems = check_consistent(facts)
        problems += history_overlaps(facts.history)
        problems += [f"{r.label} {r.pid} exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                     for r in replicas if r.returncode != 0]
        if held != samples:
            problems.append(f"the lock left the frozen leader ({held}/{samples} samples)")
        problems += [f"replica {r.pid} finished during the freeze"
                     for r in migrating_during_freeze]
        problems += [f"{h['revision']} applied by {h['pid']}, not the frozen leader"
                     for h in facts.history if h["status"] == "applied"
                     and h["pid"] != leader.pid]
        return {"landed": landed,
                "fault": "frozen inside m2" if landed else "the leader's m2 did not span "
                "the freeze", "freeze_seconds": FREEZE, "lock_held_samples": f"{held}/{samples}",
                "ready_after_thaw_seconds": round(time.monotonic() - thawed, 3),
                "leader": leader.report.get("action"),
                "others": [r.report.get("action") for r in others],
                "problems": problems, "leaks": leaks(secret, herd.outputs)}


@pytest.mark.parametrize("trials", [pytest.param(1, id="fast"),
                                    pytest.param(3, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_a_frozen_leader_keeps_the_lock_and_finishes_after_the_thaw(
        trials: int, proxied: tuple[PostgresFixture, Proxy], secret: str) -> None:
    """While a proxy freezes a leader's connections (sockets open, nothing forwarded) the
    lock stays held and no other replica migrates; after the thaw the leader finishes and
    every replica ends ready with each revision applied once."""
    pg, proxy = proxied
    results = [until_landed(partial(freeze_trial, pg, proxy, secret)) for _ in range(trials)]
    record(f"network-freeze-{'full' if trials > 1 else 'fast'}", {
        "backend": "postgresql at HERD_TEST_POSTGRES_URL (else the suite's own) via a "
                   "loopback TCP proxy", **tally(results),
        "freeze_seconds": FREEZE,
        "checks": ["fault landed: the leader's run of m2 started before the freeze and had "
                   "not ended at the thaw (journal)",
                   "lock held by the frozen leader in every sample",
                   "no replica finished during the freeze", "every replica exit 0 after the thaw",
                   "each revision applied once, by the frozen leader; no overlaps",
                   "password never printed"],
        "trials_detail": results})
    assert not failures(results), failures(results)


# -- a real partition ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def partition() -> Iterator[Partition]:
    why = partition_available()
    if why:
        pytest.skip(f"network partition: {why}")
    part = Partition()
    yield part
    part.close()


@pytest.fixture(scope="module")
def partitioned_pg(partition: Partition) -> Iterator[PostgresFixture]:
    """A server of this module's own listening on loopback and on the link's host end."""
    with fault_server(listen=("127.0.0.1", partition.host_ip),
                      settings={"max_connections": "100"}) as server:
        yield PostgresFixture(server.admin, "127.0.0.1", server.port, server)


def dropped_packets(part: Partition) -> int:
    """Packets the host's end of the link dropped: while the link is down, whatever the
    server sends the leader (replies, retransmissions, keepalive probes)."""
    return int(Path(f"/sys/class/net/{part.host_if}/statistics/tx_dropped").read_text())


def sessions_from(admin: URL, address: str) -> int:
    found = rows(admin, "SELECT count(*) FROM pg_stat_activity WHERE client_addr = "
                        "CAST(:a AS inet)", a=address)
    return int(found[0][0])


def partition_trial(pg: PostgresFixture, part: Partition, tpm: bool, secret: str
                    ) -> dict[str, Any]:
    with pg.database() as url:
        admin = pg.admin_of(url)
        herd = Herd(env={"HERD_FAULT_STEP": str(STEP), "HERD_TEST_TPM": "1" if tpm else "0"})
        inside = pg.url(url.database or "", part.host_ip)
        leader, others = start_herd(herd, url, inside, admin, prefix=part.command([]))
        assert sessions_from(admin, part.ns_ip) >= 2  # lock session + migration session
        dropped_before = dropped_packets(part)
        fault_at = datetime.now(UTC)
        part.cut()
        healed = False
        try:
            lock_freed = until(lambda: holder_pid(admin) != leader.pid, "the lock to be freed",
                               bound=KEEPALIVE_BOUND + MARGIN + 30, every=0.1)
            sessions_gone = until(lambda: sessions_from(admin, part.ns_ip) == 0,
                                  "the leader's sessions to end",
                                  bound=KEEPALIVE_BOUND + MARGIN + 30, every=0.1)
            for r in others:
                r.proc.wait(BOUND)
            dropped = dropped_packets(part) - dropped_before
        finally:
            part.heal()
            healed = True
        try:  # the old leader finds its sessions gone, starts over, sees the work done
            leader.proc.wait(BOUND)
            hung = False
        except Exception:
            hung = True
            kill(leader.pid)
        herd.finish()
        cut = leader_in_m2(herd, leader).cut_by(fault_at.timestamp())
        facts = inspect_database(url)
        problems = check_consistent(facts, stopped={leader.pid})
        problems += history_overlaps(facts.history)
        problems += after_fault(facts, leader, fault_at)
        problems += [f"{r.label} {r.pid} exited {r.returncode}: {r.report} {r.stderr[-600:]}"
                     for r in others if r.returncode != 0]
        if lock_freed > KEEPALIVE_BOUND + MARGIN:
            problems.append(f"lock freed after {lock_freed:.1f} s, bound {KEEPALIVE_BOUND} s "
                            f"+ {MARGIN:g} s margin")
        assert healed
        return {"tpm": tpm, "landed": cut and dropped > 0,
                "fault": f"cut inside m2, {dropped} packets dropped" if cut else
                f"the leader's m2 not cut ({dropped} packets dropped)",
                "packets_dropped": dropped, "lock_freed_seconds": round(lock_freed, 2),
                "leader_sessions_gone_seconds": round(lock_freed + sessions_gone, 2),
                "others": [r.report.get("action") for r in others],
                "old_leader_after_heal": "killed: still hung" if hung else
                (leader.report.get("action") or leader.report.get("type")),
                "old_leader_stopped_before_next_revision": not after_fault(facts, leader,
                                                                           fault_at),
                "statuses": [(h["revision"], h["status"], h["pid"] == leader.pid)
                             for h in facts.history],
                "problems": problems, "leaks": leaks(secret, herd.outputs)}


def control_trial(pg: PostgresFixture, part: Partition) -> dict[str, Any]:
    """The same cut, for a session holding an advisory lock without server keepalives."""
    with pg.database() as url:
        admin = pg.admin_of(url)
        inside = pg.url(url.database or "", part.host_ip)
        code = ("import sys, time, psycopg\n"
                "c = psycopg.connect(sys.argv[1], autocommit=True)\n"
                "c.execute('SELECT pg_advisory_lock(4711)')\n"
                "print('locked', flush=True)\n"
                "time.sleep(600)\n")
        dsn = inside.set(drivername="postgresql").render_as_string(hide_password=False)
        raw = subprocess.Popen(part.command([sys.executable, "-c", code, dsn]),
                               stdout=subprocess.PIPE, text=True)
        try:
            assert raw.stdout is not None and raw.stdout.readline().strip() == "locked"
            part.cut()
            try:
                time.sleep(KEEPALIVE_BOUND + 10)
                held = bool(rows(admin, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                        "'advisory' AND objid = 4711")[0][0])
            finally:
                part.heal()
        finally:
            raw.kill()
            raw.wait()
        rows(pg.admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                       "client_addr = CAST(:a AS inet)", a=part.ns_ip)
        return {"seconds_after_cut": KEEPALIVE_BOUND + 10, "still_held": held}


@pytest.mark.parametrize("trials", [pytest.param(1, id="fast"),
                                    pytest.param(3, id="full", marks=pytest.mark.slow)])
@pytest.mark.timeout(1800)
def test_a_partitioned_leader_loses_the_lock_within_the_keepalive_bound_and_is_fenced(
        trials: int, partitioned_pg: PostgresFixture, partition: Partition,
        secret: str) -> None:
    """When the leader's network link goes down mid-revision, the server drops its lock
    and migration sessions within idle + interval * count of herd's keepalives (25 s; a
    generous margin on this loaded machine), a waiter finishes the job, and the old leader,
    reconnected, starts no revision after the cut; each revision is applied once."""
    results = [until_landed(partial(partition_trial, partitioned_pg, partition, n % 2 == 1,
                                    secret)) for n in range(trials)]
    control = control_trial(partitioned_pg, partition) if trials > 1 else None
    record(f"network-partition-{'full' if trials > 1 else 'fast'}", {
        "backend": "postgresql (a server of the test's own) reached over a veth link from a "
                   "network namespace; the link is taken down",
        **tally(results),
        "keepalives": {"idle": KEEPALIVES[0], "interval": KEEPALIVES[1],
                       "count": KEEPALIVES[2], "bound_seconds": KEEPALIVE_BOUND},
        "packets_dropped": [r["packets_dropped"] for r in results],
        "lock_freed_seconds": [r["lock_freed_seconds"] for r in results],
        "leader_sessions_gone_seconds": [r["leader_sessions_gone_seconds"] for r in results],
        "control_without_server_keepalives": control,
        "checks": ["fault landed: the link went down while the leader held the lock and was "
                   "inside m2 (its run never ended: journal), and the host's end of the link "
                   "dropped packets meanwhile", "lock freed within the keepalive bound (+ margin)",
                   "every other replica exit 0", "each revision's committed marks once",
                   "no overlapping runs", "old leader started no revision after the cut",
                   "password never printed"],
        "trials_detail": results})
    assert not failures(results), failures(results)
    if control is not None:
        assert control["still_held"], control
