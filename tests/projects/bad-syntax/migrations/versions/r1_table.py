"""create table one

Revision ID: r1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "r1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("one", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
