"""add a column whose default is stable

Revision ID: stable_default
Revises: volatile_default
"""
import sqlalchemy as sa
from alembic import op

revision = "stable_default"
down_revision = "volatile_default"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("seen_at", sa.DateTime, server_default=sa.func.now()))


def downgrade() -> None:
    pass
