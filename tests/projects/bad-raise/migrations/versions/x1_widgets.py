"""create widgets

Revision ID: x1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "x1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
