"""insert a second row (a data migration)

Revision ID: m3
Revises: m2
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "m3"
down_revision = "m2"
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
    items = sa.table("items", sa.column("name", sa.String))
    op.bulk_insert(items, [{"name": "second"}])
    pause()
    mark("end")


def downgrade() -> None:
    op.execute("DELETE FROM items WHERE name = 'second'")
