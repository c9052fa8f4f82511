"""create items and seed one row (a data migration)

Revision ID: m1
Revises:
"""
import sqlalchemy as sa
from alembic import op
from faultset_marks import begin, end, pause

revision = "m1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    begin(revision)
    items = op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    pause()
    op.bulk_insert(items, [{"name": "seeded"}])
    end(revision)


def downgrade() -> None:
    op.drop_table("items")
