"""add a NOT NULL column without a default

Revision ID: add_not_null
Revises: drop_not_null
"""
import sqlalchemy as sa
from alembic import op

revision = "add_not_null"
down_revision = "drop_not_null"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("age", sa.Integer, nullable=False))


def downgrade() -> None:
    pass
