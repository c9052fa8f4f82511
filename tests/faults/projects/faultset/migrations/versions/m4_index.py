"""index items.name

Revision ID: m4
Revises: m3
"""
from alembic import op
from faultset_marks import begin, end, pause

revision = "m4"
down_revision = "m3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    begin(revision)
    pause()
    op.create_index("ix_items_name", "items", ["name"])
    end(revision)


def downgrade() -> None:
    op.drop_index("ix_items_name", table_name="items")
