"""data migration: insert exactly one row; can pause (HERD_TEST_MARK) or be slow

HERD_TEST_MARK: write the pid to that file once the row is inserted (or, downgrading,
deleted: the proof that the revision's code is running), then wait until the file MARK.go
exists. HERD_TEST_SLOW:
then sleep that many seconds (a slow first revision).

Revision ID: f1
Revises:
"""
import os
import time
from pathlib import Path

from alembic import op

revision = "f1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("INSERT INTO seeded (name) VALUES ('once')")
    _hold()
    time.sleep(float(os.environ.get("HERD_TEST_SLOW", "0")))


def downgrade() -> None:
    op.execute("DELETE FROM seeded WHERE name = 'once'")
    _hold()


def _hold() -> None:
    """With HERD_TEST_MARK: write the pid there (the row written: the revision's code is
    running), then wait until MARK.go exists."""
    mark = os.environ.get("HERD_TEST_MARK")
    if mark:
        Path(mark).write_text(str(os.getpid()))
        go = Path(mark + ".go")
        until = time.monotonic() + 300
        while not go.exists() and time.monotonic() < until:
            time.sleep(0.05)
