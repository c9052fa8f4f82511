"""two tables with a pause between them (half-applied without transactional DDL)

Revision ID: m2
Revises: m1
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "m2"
down_revision = "m1"
branch_labels = None
depends_on = None


def mark(event: str) -> None:
    """A row in fault_marks, in this revision's transaction: only committed work counts."""
    bind = op.get_bind()
    now = "clock_timestamp()" if bind.dialect.name == "postgresql" else "NOW(6)"
    bind.execute(sa.text(f"INSERT INTO fault_marks (pid, revision, event, at) "
                         f"VALUES (:pid, :rev, :event, {now})"),
                 {"pid": os.getpid(), "rev": revision, "event": event})


def pause() -> None:
    time.sleep(float(os.environ.get("HERD_FAULT_STEP", "0")))


def upgrade() -> None:
    mark("start")
    op.create_table("partial_a", sa.Column("id", sa.Integer, primary_key=True))
    pause()
    op.create_table("partial_b", sa.Column("id", sa.Integer, primary_key=True))
    mark("end")


def downgrade() -> None:
    op.drop_table("partial_b")
    op.drop_table("partial_a")
