"""a data migration that fails (after a pause, so that the other replicas queue)

The pause is HERD_TEST_FAIL_DELAY seconds (default 1), or, when HERD_TEST_FAIL_GATE names a
file, until that file exists (a test opens the gate once its other replicas are waiting).

Revision ID: f2
Revises: f1
"""
import os
import time
from pathlib import Path

revision = "f2"
down_revision = "f1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    marks = os.environ.get("HERD_TEST_MARKS")  # a test sees this revision start
    if marks:
        Path(marks, revision).touch()
    gate = os.environ.get("HERD_TEST_FAIL_GATE")
    if gate:
        deadline = time.monotonic() + 120
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(float(os.environ.get("HERD_TEST_FAIL_DELAY", "1")))
    raise RuntimeError("boom: bad data")


def downgrade() -> None:
    pass
