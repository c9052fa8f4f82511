"""add a NOT NULL column with a constant default

Revision ID: add_not_null_default
Revises: add_not_null
"""
import sqlalchemy as sa
from alembic import op

revision = "add_not_null_default"
down_revision = "add_not_null"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("age", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    pass
