"""a revision file with a syntax error

Revision ID: r2
Revises: r1
"""
import sqlalchemy as sa
from alembic import op

revision = "r2"
down_revision = "r1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("two", sa.Column("id", sa.Integer, primary_key=True)


def downgrade() -> None:
    pass
