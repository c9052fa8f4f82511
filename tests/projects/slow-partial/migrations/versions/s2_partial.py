"""two tables with a pause between them (HERD_TEST_SLOW seconds): kill the leader in the
pause and, without transactional DDL, the revision is left half-applied

Revision ID: s2
Revises: s1
"""
import os
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "s2"
down_revision = "s1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    marks = os.environ.get("HERD_TEST_MARKS")  # a test sees this revision start
    if marks:
        Path(marks, revision).touch()
    op.create_table("partial_a", sa.Column("id", sa.Integer, primary_key=True))
    time.sleep(float(os.environ.get("HERD_TEST_SLOW", "0")))
    op.create_table("partial_b", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("partial_b")
    op.drop_table("partial_a")
