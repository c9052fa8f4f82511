"""data migration: one row (items.name has no unique constraint, so a rerun shows)

Revision ID: b2
Revises: a1
"""
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    items = sa.table("items", sa.column("name", sa.String), sa.column("attrs", sa.JSON))
    op.bulk_insert(items, [{"name": "seeded", "attrs": {"by": "async env.py"}}])


def downgrade() -> None:
    op.execute("DELETE FROM items WHERE name = 'seeded'")
