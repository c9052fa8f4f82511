"""items

Revision ID: p1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "p1"
down_revision = None


def upgrade() -> None:
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("title", sa.String(100), nullable=False))


def downgrade() -> None:
    op.drop_table("item")
