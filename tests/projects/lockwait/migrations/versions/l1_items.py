"""create items, seed a few rows

Revision ID: l1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "l1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
    op.bulk_insert(items, [{"id": i, "name": f"item {i}"} for i in range(1, 11)])


def downgrade() -> None:
    op.drop_table("items")
