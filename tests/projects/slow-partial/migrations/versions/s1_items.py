"""create items and seed one row (a data migration: a second run shows up as a second row)

Revision ID: s1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "s1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.bulk_insert(items, [{"name": "seeded"}])


def downgrade() -> None:
    op.drop_table("items")
