"""create items and seed one row (a data migration)

Revision ID: m1
Revises:
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "m1"
down_revision = None
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
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    pause()
    op.bulk_insert(items, [{"name": "seeded"}])
    mark("end")


def downgrade() -> None:
    op.drop_table("items")
