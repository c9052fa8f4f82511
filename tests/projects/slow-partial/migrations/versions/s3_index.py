"""index items.name

Revision ID: s3
Revises: s2
"""
from alembic import op

revision = "s3"
down_revision = "s2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_name", "items", ["name"])


def downgrade() -> None:
    op.drop_index("ix_items_name", table_name="items")
