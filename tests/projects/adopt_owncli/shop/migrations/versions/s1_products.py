"""products, and the log of price index rebuilds

Revision ID: s1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "s1"
down_revision = None


def upgrade() -> None:
    op.create_table("product", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(100), nullable=False))
    op.create_table("index_rebuild", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("products", sa.Integer, nullable=False))


def downgrade() -> None:
    op.drop_table("index_rebuild")
    op.drop_table("product")
