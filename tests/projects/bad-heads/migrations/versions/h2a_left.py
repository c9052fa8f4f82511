"""one head

Revision ID: h2a
Revises: h1
"""
import sqlalchemy as sa
from alembic import op

revision = "h2a"
down_revision = "h1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("left_table", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
