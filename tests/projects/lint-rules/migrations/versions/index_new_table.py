"""create a table and index it in the same revision

Revision ID: index_new_table
Revises: index_concurrent
"""
import sqlalchemy as sa
from alembic import op

revision = "index_new_table"
down_revision = "index_concurrent"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_table("events", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("kind", sa.String(20)))
    op.create_index("ix_events_kind", "events", ["kind"])


def downgrade() -> None:
    pass
