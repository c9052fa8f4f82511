"""N real processes released at once against fresh databases on every backend.

After each trial: every process exited 0, exactly one migrated, the schema is at head, the
data migration's row exists exactly once, and the attempt log shows each revision applied
once. The control runs plain ``alembic upgrade head`` under the same herd and shows the
failure this project exists to prevent, so these tests can fail.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from conftest import PROJECTS, make_database, render
from herd_harness import release

N = int(os.environ.get("HERD_TEST_N", "16"))
TRIALS = int(os.environ.get("HERD_TEST_TRIALS", "1"))
"""Trials per backend and transaction mode: `make test` runs one (eight herds in all),
`make herd` runs N=64 three times each."""
CONFIG = str(PROJECTS / "herdset" / "alembic.ini")
HEAD = "d4"
REVISIONS = ["a1", "b2", "c3", "d4"]

fresh_database = contextlib.contextmanager(make_database)


def inspect_database(url: URL) -> dict[str, Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            heads = sorted(versions.scalars())
            seeded = conn.scalar(sa.text("SELECT count(*) FROM settings WHERE name = 'seeded'"))
            history = conn.execute(
                sa.text("SELECT revision, status FROM herd_history ORDER BY id")).all()
    finally:
        engine.dispose()
    return {"heads": heads, "seeded": seeded, "history": [tuple(r) for r in history]}


@pytest.mark.herd
@pytest.mark.parametrize("tpm", [False, True], ids=["one-transaction", "transaction-per-migration"])
def test_one_replica_migrates_the_rest_wait(backend: str, tpm: bool, request: pytest.FixtureRequest,
                                           tmp_path: Path) -> None:
    """A herd of N replicas on a fresh database: all exit 0, one migrates, the data migration
    runs exactly once, and the history records each revision applied exactly once."""
    env = {"HERD_TEST_TPM": "1" if tpm else "0"}
    for trial in range(TRIALS):
        with fresh_database(backend, request, tmp_path / f"trial{trial}") as url:
            (tmp_path / f"trial{trial}").mkdir(exist_ok=True)
            results = release(N, ["herd", CONFIG, render(url)], env=env)
            failures = [(r.returncode, r.report, r.stderr[-2000:]) for r in results if r.returncode]
            assert not failures, f"trial {trial}: {len(failures)} of {N} failed: {failures[:3]}"
            actions = Counter(r.report["action"] for r in results)
            assert actions["migrated"] == 1, f"trial {trial}: {actions}"
            assert actions["migrated"] + actions["waited"] + actions["current"] == N
            migrated = next(r for r in results if r.report["action"] == "migrated")
            assert migrated.report["revisions"] == REVISIONS
            state = inspect_database(url)
            assert state["heads"] == [HEAD]
            assert state["seeded"] == 1, f"trial {trial}: data migration ran {state['seeded']}x"
            assert state["history"] == [(rev, "applied") for rev in REVISIONS]
            assert all(r.report["heads"] == [HEAD] for r in results)


@pytest.mark.herd
def test_control_plain_alembic_fails_under_the_same_herd(backend: str,
                                                         request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    """Without herd, the same herd of plain `alembic upgrade head` processes breaks: some exit
    non-zero or the data migration's row appears more than once (the race is real)."""
    broken = []
    for trial in range(max(TRIALS, 3)):
        with fresh_database(backend, request, tmp_path / f"control{trial}") as url:
            (tmp_path / f"control{trial}").mkdir(exist_ok=True)
            results = release(N, ["alembic", CONFIG, render(url)], env={"HERD_TEST_TPM": "1"})
            failed = sum(1 for r in results if r.returncode)
            try:
                seeded = inspect_control(url)
            except Exception as exc:  # schema left broken
                seeded = f"unreadable: {type(exc).__name__}"
            if failed or seeded != 1:
                broken.append((trial, failed, seeded))
                break
    assert broken, "plain alembic survived every trial: the herd test cannot tell a race"


def inspect_control(url: URL) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text("SELECT count(*) FROM settings WHERE name = 'seeded'"))
    finally:
        engine.dispose()
