"""core: accounts

Revision ID: r0
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "r0"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
