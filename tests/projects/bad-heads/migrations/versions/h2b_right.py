"""another head on the same base

Revision ID: h2b
Revises: h1
"""
import sqlalchemy as sa
from alembic import op

revision = "h2b"
down_revision = "h1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("right_table", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
