"""Rolling deploys with real processes on real databases: release 2 (r2 expand, r3 contract,
r4 expand) rolls out over release 1 (r1 only).

* ``--expand-only`` applies r2 and stops before r3, saying what is left;
* release-1 code restarted on a database ahead by expand revisions only starts (exit 0, one
  line), and refuses (exit 5) once r3 is applied, naming r3, when and by which host;
* herd's revision graph (``herd_revisions``) is what lets release 1 decide, and a revision
  without an entry counts as the unmarked setting;
* release-1 replicas serving live traffic see no failed request through the whole expand
  rollout (a restart included), and the contract step under the same traffic makes them
  fail (the control that shows the traffic check can fail).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd.integrations.readiness import ReadinessProbe
from conftest import PROJECTS, render
from test_entrypoint import (
    BECOME_HERD,
    HERD,
    HOLD,
    HOST,
    Running,
    Spawn,
    app,
    error_line,
    herd,
    herd_env,
    lines,
    spawn,
)

__all__ = ["spawn"]  # the fixture, imported for its tests

RELEASE_2 = PROJECTS / "rolling"
LEFT = ("2 revision(s) left from contract revision r3 on: r3, r4 - deploy them after the old "
        "release is gone")
SAFE = "database is ahead by r2 (all expand); this release can run on it"


@pytest.fixture
def releases(tmp_path: Path) -> tuple[str, str]:
    """alembic.ini of release 1 (a copy of the project with r1 only) and of release 2."""
    release_1 = tmp_path / "release-1"
    shutil.copytree(RELEASE_2, release_1)
    for newer in ("r2_nickname.py", "r3_drop_legacy.py", "r4_notes.py"):
        (release_1 / "migrations" / "versions" / newer).unlink()
    return str(release_1 / "alembic.ini"), str(RELEASE_2 / "alembic.ini")


def heads(url: URL | str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    engine.dispose()
    return found


def released_together(argvs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every ``herd ...`` command line, let each get ready, then release them at once."""
    procs = [subprocess.Popen([sys.executable, "-c", BECOME_HERD, *HERD, *argv],
                              env=herd_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:  # the barrier opens
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_expand_only_rollout_keeps_release_1_running_until_the_contract_step(
        db: URL, releases: tuple[str, str], tmp_path: Path) -> None:
    """Four release-2 replicas with --expand-only (two 'migrate', two 'run') and two
    restarting release-1 replicas, released together: r2 is applied once, r3 never, every
    replica reports what is left or starts its command; after a plain 'herd migrate' (the
    contract step) a restarted release-1 replica exits 5 naming r3, when it was applied and
    by which host and pid."""
    old, new = releases
    url = render(db)
    assert herd("migrate", "-c", old, "--url", url).returncode == 0
    marker = tmp_path / "served"
    serve = app(f"open({str(marker)!r}, 'a').write('x'); print('release 1 serving')")

    serve_2 = app("print('release 2 serving')")
    rollout = released_together(
        [["migrate", "--expand-only", "-c", new, "--url", url]] * 2
        + [["run", "--expand-only", "-c", new, "--url", url, "--", *serve_2]] * 2
        + [["run", "-c", old, "--url", url, "--", *serve]] * 2)

    said = [p.stdout + p.stderr for p in rollout[:4]]
    assert sum("applied 1 expand revision(s) to r2" in text for text in said) == 1, said
    for proc in rollout[:2]:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.endswith(f"; {LEFT}\n"), proc.stdout
    for proc in rollout[2:4]:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "release 2 serving\n"
        assert f"; {LEFT}; starting " in proc.stderr, proc.stderr
    for proc in rollout[4:]:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "release 1 serving\n"
    assert marker.read_text() == "xx"
    assert heads(db) == ["r2"]
    rows = json.loads(herd("history", "-c", new, "--url", url, "--json").stdout)
    assert Counter(r["revision"] for r in rows if r["status"] == "applied") == {"r1": 1, "r2": 1}

    # a release-1 replica restarting now: one line on stderr, then its command
    restarted = herd("run", "-c", old, "--url", url, "--", *serve)
    assert restarted.returncode == 0, restarted.stderr
    assert any(line.endswith(SAFE) for line in lines(restarted.stderr)), restarted.stderr
    for verb in ("check", "wait", "status", "migrate"):
        assert herd(verb, "-c", old, "--url", url).returncode == 0, verb
    status = herd("status", "-c", old, "--url", url).stdout
    assert "ahead:          r2 (all expand: this release can run on it)" in status

    # the contract step, then release 1 restarts once more
    contract = herd("migrate", "-c", new, "--url", url)
    assert contract.stdout.startswith("migrated 2 revision(s) to r4"), contract.stderr
    pid = re.findall(r"herd\[[^:\]]+:(\d+)\] migrated", contract.stderr)[0]
    marker.unlink()
    for verb, extra in (("run", ["--", *serve]), ("migrate", []), ("wait", []),
                        ("check", []), ("status", [])):
        refused = error_line(herd(verb, "-c", old, "--url", url, *extra), 5)
        assert "is ahead of this code by r2, r3, r4: r3 is a contract revision (applied " in (
            refused)
        assert f" by host {HOST}, pid {pid}), so this release cannot run on it" in refused
        assert "--allow-ahead" in refused
    assert not marker.exists()
    allowed = herd("run", "-c", old, "--url", url, "--allow-ahead", "--", *serve)
    assert allowed.stdout == "release 1 serving\n", allowed.stderr


def test_control_without_expand_only_release_1_cannot_restart(
        db: URL, releases: tuple[str, str]) -> None:
    """Control: the same rollout with a plain 'herd migrate' applies the contract revision
    at once, and a restarting release-1 replica is refused (exit 5)."""
    old, new = releases
    url = render(db)
    assert herd("migrate", "-c", old, "--url", url).returncode == 0
    assert herd("migrate", "-c", new, "--url", url).returncode == 0
    assert heads(db) == ["r4"]
    assert "r3 is a contract revision" in error_line(herd("check", "-c", old, "--url", url), 5)


def test_graph_records_parents_and_declared_phase(db: URL) -> None:
    """Each revision herd applies is in herd_revisions with its parents and its declared
    phase, written under the scope of its version table."""
    alembic_herd.upgrade(RELEASE_2 / "alembic.ini", url=render(db), expand_only=True)
    alembic_herd.upgrade(RELEASE_2 / "alembic.ini", url=render(db))
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT scope, revision, parents, phase FROM herd_revisions ORDER BY revision")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("alembic_version", "r1", "", "expand"), ("alembic_version", "r2", "r1", "expand"),
        ("alembic_version", "r3", "r2", "contract"), ("alembic_version", "r4", "r3", "expand")]


def test_a_revision_without_a_graph_entry_counts_as_unmarked(
        db: URL, releases: tuple[str, str]) -> None:
    """r2 applied by plain alembic has no graph entry: release 1 refuses, saying so; as
    contract by default, and with --unmarked-phase expand because herd cannot see what came
    before it; --allow-ahead still starts it."""
    old, new = releases
    url = render(db)
    config = Config(new)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "r2")
    refused = error_line(herd("check", "-c", old, "--url", url), 5)
    assert ("r2 has no entry in herd's revision graph (applied by plain alembic, or before herd "
            "recorded phases) and counts as unmarked, which is contract (--unmarked-phase) "
            "(when and by whom: not in herd's attempt log)") in refused
    blind = error_line(herd("check", "-c", old, "--url", url, "--unmarked-phase", "expand"), 5)
    assert "which is expand (--unmarked-phase), but herd cannot see which revisions came " \
           "before it" in blind
    assert herd("check", "-c", old, "--url", url, "--allow-ahead").returncode == 0


def test_readiness_probe_of_release_1_follows_the_phases(
        db: URL, releases: tuple[str, str]) -> None:
    """Release 1's readiness probe is ready on a database ahead by r2 (expand) and not ready
    once r3 (contract) is applied, with the reason naming r3."""
    old, new = releases
    url = render(db)
    alembic_herd.upgrade(new, url=url, expand_only=True)
    probe = ReadinessProbe(old, url=url)
    try:
        ready = probe.probe()
        assert ready["status"] == "ready" and ready["ahead"] == ["r2"], ready
        alembic_herd.upgrade(new, url=url)
        refused = probe.probe()
    finally:
        probe.close()
    assert refused["status"] == "not ready"
    assert refused["ahead"] == ["r2", "r3", "r4"]
    assert "r3 is a contract revision" in refused["reason"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readiness_probe_of_release_2_with_expand_only(db: URL) -> None:
    """Release 2's probe with expand_only (pods started with `herd run --expand-only`) is
    not ready while r2 is pending, ready at r2 with r3 and r4 'left' for the contract step,
    and ready at r4; without expand_only it is not ready at r2 (which would stall the
    rollout: the contract step waits for it)."""
    ini, url = str(RELEASE_2 / "alembic.ini"), render(db)
    alembic_herd.upgrade(ini, url=url, target="r1")
    rolling, plain = ReadinessProbe(ini, url=url, expand_only=True), ReadinessProbe(ini, url=url)
    try:
        before = rolling.probe()
        assert (before["status"], before["pending"], before["left"]) == (
            "not ready", 1, ["r3", "r4"]), before
        alembic_herd.upgrade(ini, url=url, expand_only=True)
        expanded = rolling.probe()
        assert (expanded["status"], expanded["pending"], expanded["left"]) == (
            "ready", 0, ["r3", "r4"]), expanded
        assert plain.probe()["reason"] == "migrations pending: 2 revision(s) to apply"
        alembic_herd.upgrade(ini, url=url)
        done = rolling.probe()
        assert done["status"] == "ready" and "left" not in done, done
    finally:
        rolling.close()
        plain.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_check_with_expand_only_is_current_at_the_expand_step(db: URL) -> None:
    """`herd check --expand-only` (or HERD_EXPAND_ONLY=1, as a worker's startup probe gets
    it) counts only the revisions before the first contract one: exit 1 while r2 is
    pending, exit 0 at r2 naming what is left; a plain `herd check` is exit 1 there."""
    ini, url = str(RELEASE_2 / "alembic.ini"), render(db)
    alembic_herd.upgrade(ini, url=url, target="r1")
    before = herd("check", "-c", ini, "--url", url, "--expand-only")
    assert (before.returncode, before.stdout) == (1, "not current: 1 revision(s) pending (r2)\n")
    alembic_herd.upgrade(ini, url=url, expand_only=True)
    at_r2 = "current: alembic_version at r2; 2 revision(s) left for the contract step (r3, r4)\n"
    for check in (herd("check", "-c", ini, "--url", url, "--expand-only"),
                  herd("check", "-c", ini, "--url", url, env={"HERD_EXPAND_ONLY": "true"})):
        assert (check.returncode, check.stdout) == (0, at_r2), check.stderr
    assert herd("check", "-c", ini, "--url", url).returncode == 1
    status = alembic_herd.status(ini, url=url, expand_only=True)
    assert status.is_current and status.left == ("r3", "r4")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_expand_only_with_an_unmarked_revision_follows_the_setting(
        db: URL, tmp_path: Path) -> None:
    """An unmarked r2 counts as contract by default, so --expand-only applies nothing past
    r1; with unmarked_phase='expand' it applies r2 and stops at r3. wait_until_current with
    expand_only returns at the same point."""
    project = tmp_path / "unmarked"
    shutil.copytree(RELEASE_2, project)
    r2 = project / "migrations" / "versions" / "r2_nickname.py"
    r2.write_text(r2.read_text().replace('herd_phase = "expand"\n', ""))
    ini, url = project / "alembic.ini", render(db)
    first = alembic_herd.upgrade(ini, url=url, expand_only=True)
    assert first.revisions == ("r1",) and first.left == ("r2", "r3", "r4")
    second = alembic_herd.upgrade(ini, url=url, expand_only=True, unmarked_phase="expand")
    assert second.revisions == ("r2",) and second.left == ("r3", "r4")
    assert second.describe().endswith(LEFT)
    waited = alembic_herd.wait_until_current(ini, url=url, expand_only=True, timeout=5)
    assert waited.action == "current" and waited.left == ("r3", "r4")
    with pytest.raises(alembic_herd.ConfigurationError, match="'expnad'"):
        alembic_herd.upgrade(ini, url=url, unmarked_phase="expnad")  # type: ignore[arg-type]


BRANCH = '''
revision = "{rev}"
down_revision = {parents!r}
branch_labels = None
depends_on = None
herd_phase = "{phase}"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


@pytest.mark.parametrize("backend", ["sqlite"])
def test_branches_merge_and_ambiguous_expand_only(db: URL, tmp_path: Path,
                                                  releases: tuple[str, str]) -> None:
    """Two expand branches x2a, x2b after r1 merged by contract m3: --expand-only has no one
    revision to stop at and exits 3 naming both; the graph stores m3's two parents, and
    release 1 walks through the merge and refuses naming m3."""
    old, _ = releases
    project = tmp_path / "branches"
    shutil.copytree(Path(old).parent, project)
    versions = project / "migrations" / "versions"
    for rev, parents, phase in (("x2a", "r1", "expand"), ("x2b", "r1", "expand"),
                                ("m3", ("x2a", "x2b"), "contract")):
        (versions / f"{rev}.py").write_text(BRANCH.format(rev=rev, parents=parents, phase=phase))
    ini, url = str(project / "alembic.ini"), render(db)
    ambiguous = error_line(herd("migrate", "-c", ini, "--url", url, "--expand-only"), 3)
    assert ("--expand-only: the expand revisions before contract revision m3 end on several "
            "branches (x2a, x2b)") in ambiguous
    assert herd("migrate", "-c", ini, "--url", url).returncode == 0
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        parents = conn.scalar(sa.text("SELECT parents FROM herd_revisions WHERE revision = 'm3'"))
    engine.dispose()
    assert parents == "x2a x2b"
    refused = error_line(herd("check", "-c", old, "--url", url), 5)
    assert "m3 is a contract revision" in refused
    assert re.search(r"ahead of this code by (x2a, x2b|x2b, x2a), m3:", refused), refused


@pytest.mark.parametrize("backend", ["sqlite"])
def test_expand_only_cannot_stop_a_wrapped_command(db: URL) -> None:
    """`herd migrate --expand-only -- CMD` exits 3: herd cannot stop CMD at a revision."""
    proc = herd("migrate", "-c", str(RELEASE_2 / "alembic.ini"), "--url", render(db),
                "--expand-only", "--", sys.executable, "-c", "pass")
    assert "--expand-only cannot stop a wrapped migration command" in error_line(proc, 3)


# -- live traffic ---------------------------------------------------------------------------

# Release 1's requests, served continuously until SIGTERM: each one writes an account with the
# column release 1 knows (legacy) and reads it back by naming its columns, in one transaction.
# One line per request in the log: "START END ok" or "START END fail ERROR" (time.time()).
RELEASE_1_TRAFFIC = """
import signal, sys, time, uuid
import sqlalchemy as sa
url, log_path = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
engine = sa.create_engine(url)
insert = sa.text("INSERT INTO accounts (email, legacy) VALUES (:email, 'r1')")
select = sa.text("SELECT id, email, legacy FROM accounts WHERE email = :email")
print("serving", flush=True)
with open(log_path, "a", buffering=1) as log:
    while not stop:
        email, start = uuid.uuid4().hex + "@example.com", time.time()
        try:
            with engine.begin() as conn:
                conn.execute(insert, {"email": email})
                row = conn.execute(select, {"email": email}).one()
                assert row.legacy == "r1", row
            outcome = "ok"
        except Exception as exc:
            outcome = "fail " + type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0]
        log.write(f"{start:.6f} {time.time():.6f} {outcome}\\n")
        time.sleep(0.02)
engine.dispose()
"""


Request = tuple[float, float, str]  # start, end, "ok" or "fail ERROR"


def requests(log: Path) -> list[Request]:
    """The complete lines of a replica's request log."""
    found = []
    for line in log.read_text().splitlines(keepends=True) if log.exists() else []:
        if line.endswith("\n"):
            start, end, outcome = line.rstrip("\n").split(" ", 2)
            found.append((float(start), float(end), outcome))
    return found


def served(replicas: dict[str, tuple[Running, Path]], condition: Callable[[Request], bool],
           count: int = 5, bound: float = 60) -> None:
    """Wait until every replica logged ``count`` requests meeting ``condition`` while it
    still runs."""
    deadline = time.monotonic() + bound
    for name, (running, log) in replicas.items():
        while sum(map(condition, requests(log))) < count:
            assert running.proc.poll() is None, (name, running.finish())
            assert time.monotonic() < deadline, (name, requests(log)[-5:])
            time.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_no_release_1_request_fails_during_the_expand_phase(
        db: URL, releases: tuple[str, str], tmp_path: Path, spawn: Spawn) -> None:
    """Two release-1 replicas (started through `herd run`) serve requests that read and write
    the column r3 drops, continuously, while release 2 rolls out with --expand-only (two
    'migrate', two 'run', released together) and one release-1 replica restarts on the
    expanded database: no request that ended before the contract step failed, and every
    replica served requests during the rollout and after r2. Control: the contract step
    under the same traffic makes every release-1 request started after it fail."""
    old, new = releases
    url = render(db)
    assert herd("migrate", "-c", old, "--url", url).returncode == 0

    def replica(name: str) -> tuple[Running, Path]:
        log = tmp_path / f"{name}.log"
        running = spawn([*HERD, "run", "-c", old, "--url", url, "--",
                         *app(RELEASE_1_TRAFFIC), url, str(log)])
        running.out.wait_for("serving")
        return running, log

    replicas = {"a": replica("a"), "b": replica("b")}
    served(replicas, lambda r: r[2] == "ok")

    rollout_started = time.time()
    rollout = released_together([["migrate", "--expand-only", "-c", new, "--url", url]] * 2 + [
        ["run", "--expand-only", "-c", new, "--url", url, "--", *app("print('r2 up')")]] * 2)
    assert [p.returncode for p in rollout] == [0] * 4, [p.stderr for p in rollout]
    assert heads(db) == ["r2"]
    expanded = time.time()
    served(replicas, lambda r: r[0] > expanded)

    # a release-1 replica restarts on the expanded database: it starts and serves
    running, _ = replicas["b"]
    running.proc.send_signal(signal.SIGTERM)
    assert running.finish().returncode == 0
    replicas["b2"] = replica("b2")
    assert replicas["b2"][0].err.wait_for(SAFE).rstrip().endswith(SAFE)
    restarted = time.time()
    live = {name: replicas[name] for name in ("a", "b2")}
    served(live, lambda r: r[0] > restarted)

    contract_started = time.time()
    assert herd("migrate", "-c", new, "--url", url).returncode == 0
    contracted = time.time()
    served(live, lambda r: r[0] > contracted)
    for running, _ in live.values():
        running.proc.send_signal(signal.SIGTERM)
        assert running.finish().returncode == 0

    for name, (_, log) in replicas.items():
        done = requests(log)
        expand = [r for r in done if r[1] < contract_started]
        assert [r for r in expand if r[2] != "ok"] == [], name
        if name != "b2":  # b2 started after the rollout
            assert any(rollout_started < r[0] and r[1] < expanded for r in expand), name
        assert any(r[0] > expanded for r in expand), name
        # the control: after the contract step release 1's requests fail, naming the column
        after = [r for r in done if r[0] > contracted]
        if name != "b":
            assert after and all(r[2].startswith("fail ") and "legacy" in r[2]
                                 for r in after), (name, after[:3])


# -- herd downgrade --------------------------------------------------------------------------


def test_downgrade_across_a_contract_needs_yes_and_is_recorded(
        db: URL, releases: tuple[str, str]) -> None:
    """Undoing the contract revision r3 is refused (exit 3) naming it and the data it cannot
    bring back; undoing expand r4 alone needs no confirmation; with --yes the database goes
    back to r1, the column r3 dropped is back, each revision has a 'reverted' row, and
    release 1 runs on it as its own."""
    old, new = releases
    url = render(db)
    assert herd("migrate", "-c", new, "--url", url).returncode == 0
    refused = error_line(herd("downgrade", "r1", "-c", new, "--url", url), 3)
    assert "undoes contract revision(s) r3 (drop accounts.legacy" in refused
    assert "not the data the upgrade dropped or rewrote" in refused and "--yes" in refused
    assert heads(db) == ["r4"]
    expand = herd("downgrade", "r3", "-c", new, "--url", url)
    assert expand.stdout.startswith("downgraded 1 revision(s) (r4) to r3"), expand.stderr
    both = herd("downgrade", "r1", "-c", new, "--url", url, "--yes")
    assert both.stdout.startswith("downgraded 2 revision(s) (r3, r2) to r1"), both.stderr
    assert heads(db) == ["r1"]
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("accounts")}
    engine.dispose()
    assert columns == {"id", "email", "legacy"}
    rows = json.loads(herd("history", "-c", new, "--url", url, "--json").stdout)
    assert [(r["revision"], r["status"]) for r in rows[:3]] == [
        ("r2", "reverted"), ("r3", "reverted"), ("r4", "reverted")]
    assert herd("check", "-c", old, "--url", url).stdout.startswith("current: alembic_version")


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_downgrade_takes_the_migration_lock(db: URL) -> None:
    """While a live herd holds the migration lock, `herd downgrade` waits for it and gives up
    at --lock-timeout (exit 6) naming the lock's holder; once the holder is gone it
    downgrades."""
    ini, url = str(RELEASE_2 / "alembic.ini"), render(db)
    alembic_herd.upgrade(ini, url=url, target="r3")
    holder = subprocess.Popen(
        [*HERD, "migrate", "-c", ini, "--url", url, "--", *app(HOLD)], env=herd_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        waited = herd("downgrade", "r2", "-c", ini, "--url", url, "--yes", "--lock-timeout", "1s")
        line = error_line(waited, 6)
        assert "not acquired after 1.00 s; held by " in line and "then downgrade" in line
        assert heads(db) == ["r3"]
    finally:
        holder.communicate(input="", timeout=60)
    done = herd("downgrade", "r2", "-c", ini, "--url", url, "--yes")
    assert done.stdout.startswith("downgraded 1 revision(s) (r3) to r2"), done.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_downgrade_to_a_target_the_database_is_already_below(db: URL) -> None:
    """A database already at or below the target (what a concurrent downgrade to a lower
    revision leaves) has nothing to undo: exit 0 saying so, not Alembic's 'not a valid
    downgrade target'; an unknown target is still exit 3."""
    ini, url = str(RELEASE_2 / "alembic.ini"), render(db)
    alembic_herd.upgrade(ini, url=url, target="r2")
    for target in ("r3", "r4", "r2"):
        done = herd("downgrade", target, "-c", ini, "--url", url, "--yes")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("database already current at r2"), done.stdout
    below = herd("downgrade", "r4", "-c", ini, "--url", url)
    assert "database is at r2, already at or below r4; nothing to downgrade" in below.stderr
    assert "Can't locate revision" in error_line(
        herd("downgrade", "nope", "-c", ini, "--url", url), 3)
    assert heads(db) == ["r2"]


HOLD_DOWNGRADE = """
    import os, time
    hold = os.environ.get("ROLLING_HOLD_DOWNGRADE")
    if hold:  # the fault: stop here until killed
        open(hold, "w").write("started")
        time.sleep(600)
        open(hold + ".end", "w").write("not killed")
"""


def history_rows(ini: str, url: str) -> list[tuple[str, str, str | None]]:
    rows = json.loads(herd("history", "-c", ini, "--url", url, "--json").stdout)
    return [(r["revision"], r["status"], r["error"]) for r in reversed(rows)]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_killed_downgrade_is_reconciled_by_the_next(db: URL, tmp_path: Path) -> None:
    """`herd downgrade r2` is killed (SIGKILL) inside r3's downgrade, after r4's was
    committed (a transaction per revision): both rows are left 'reverting'. The next
    downgrade accounts for them against the version table: r4 is gone, so 'reverted'. r3 is
    still there: on PostgreSQL the database rolled its downgrade back ('interrupted') and the
    downgrade goes on; on MariaDB DDL is not transactional, so it stops (exit 10) naming r3
    until `herd resolve r3`."""
    project = tmp_path / "project"
    shutil.copytree(RELEASE_2, project)
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "context.configure(connection=connection)",
        "context.configure(connection=connection, transaction_per_migration=True)"))
    r3 = project / "migrations" / "versions" / "r3_drop_legacy.py"
    r3.write_text(r3.read_text().replace("def downgrade() -> None:\n",
                                         "def downgrade() -> None:" + HOLD_DOWNGRADE))
    ini, url = str(project / "alembic.ini"), render(db)
    assert herd("migrate", "-c", ini, "--url", url).returncode == 0
    mark = tmp_path / "hold"
    killed = subprocess.Popen([*HERD, "downgrade", "r2", "-c", ini, "--url", url, "--yes"],
                              env=herd_env({"ROLLING_HOLD_DOWNGRADE": str(mark)}),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not mark.exists():
            assert killed.poll() is None, killed.communicate()
            assert time.monotonic() < deadline, "the downgrade never reached r3"
            time.sleep(0.05)
    finally:
        killed.kill()
        killed.communicate(timeout=30)
    # the fault landed: inside r3's downgrade (start mark, no end mark), r4 undone
    assert mark.read_text() == "started" and not Path(f"{mark}.end").exists()
    assert heads(db) == ["r3"]
    assert [(rev, status) for rev, status, _ in history_rows(ini, url)][-2:] == [
        ("r4", "reverting"), ("r3", "reverting")]

    again = herd("downgrade", "r2", "-c", ini, "--url", url, "--yes")
    if db.get_backend_name() == "postgresql":
        assert again.stdout.startswith("downgraded 1 revision(s) (r3) to r2"), again.stderr
        assert "accounted for 2 revision(s) a previous downgrade left reverting" in again.stderr
        assert [(rev, status) for rev, status, _ in history_rows(ini, url)][-3:] == [
            ("r4", "reverted"), ("r3", "interrupted"), ("r3", "reverted")]
    else:
        refused = error_line(again, 10)
        assert "the downgrade of revision r3 was started by pid " in refused
        assert "DDL is not transactional, so the schema may be partly undone" in refused
        assert "herd resolve r3" in refused
        assert [(rev, status) for rev, status, _ in history_rows(ini, url)][-2:] == [
            ("r4", "reverted"), ("r3", "reverting")]
        assert heads(db) == ["r3"]
        assert herd("resolve", "r3", "-c", ini, "--url", url).returncode == 0
        done = herd("downgrade", "r2", "-c", ini, "--url", url, "--yes")
        assert done.stdout.startswith("downgraded 1 revision(s) (r3) to r2"), done.stderr
        assert [(rev, status) for rev, status, _ in history_rows(ini, url)][-3:] == [
            ("r4", "reverted"), ("r3", "resolved"), ("r3", "reverted")]
    assert heads(db) == ["r2"]
    r4_row = [error for rev, status, error in history_rows(ini, url) if rev == "r4"][-1]
    assert r4_row is not None and "no longer in the version table" in r4_row


@pytest.mark.parametrize("backend", ["sqlite"])
def test_old_code_beside_a_new_expand_branch_starts(db: URL, tmp_path: Path) -> None:
    """The database has two heads, y2 (known to the old code) and x2a (a new expand branch
    from r1): the walk stops at r1, the old code's own head y2 counts as applied, and the
    old code starts; once the new branch holds a contract revision it is refused."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(RELEASE_2, old)
    for newer in ("r2_nickname.py", "r3_drop_legacy.py", "r4_notes.py"):
        (old / "migrations" / "versions" / newer).unlink()
    (old / "migrations" / "versions" / "y2.py").write_text(
        BRANCH.format(rev="y2", parents="r1", phase="expand"))
    shutil.copytree(old, new)
    (new / "migrations" / "versions" / "x2a.py").write_text(
        BRANCH.format(rev="x2a", parents="r1", phase="expand"))
    url = render(db)
    assert herd("migrate", "-c", str(new / "alembic.ini"), "--url", url, "--target",
                "heads").returncode == 0
    assert heads(db) == ["x2a", "y2"]
    check = herd("check", "-c", str(old / "alembic.ini"), "--url", url)
    assert check.stdout == ("current: alembic_version at x2a, y2, ahead by x2a (all expand); "
                            "this release can run on it\n"), check.stderr
    (new / "migrations" / "versions" / "x3.py").write_text(
        BRANCH.format(rev="x3", parents="x2a", phase="contract"))
    assert herd("migrate", "-c", str(new / "alembic.ini"), "--url", url, "--target",
                "heads").returncode == 0
    refused = error_line(herd("check", "-c", str(old / "alembic.ini"), "--url", url), 5)
    assert "ahead of this code by x2a, x3: x3 is a contract revision" in refused
