"""create gadgets, then fail

Revision ID: x2
Revises: x1
"""
import sqlalchemy as sa
from alembic import op

revision = "x2"
down_revision = "x1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("gadgets", sa.Column("id", sa.Integer, primary_key=True))
    raise RuntimeError("boom: x2 fails on purpose")


def downgrade() -> None:
    pass
