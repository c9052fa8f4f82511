"""search branch: search_terms

Revision ID: s1
Revises: r0
"""
import sqlalchemy as sa
from alembic import op

revision = "s1"
down_revision = "r0"
branch_labels = ("search",)
depends_on = None


def upgrade() -> None:
    op.create_table("search_terms", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("term", sa.String(100)))


def downgrade() -> None:
    pass
