"""insert a second row (a data migration)

Revision ID: m3
Revises: m2
"""
import sqlalchemy as sa
from alembic import op
from faultset_marks import begin, end, pause

revision = "m3"
down_revision = "m2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    begin(revision)
    items = sa.table("items", sa.column("name", sa.String))
    op.bulk_insert(items, [{"name": "second"}])
    pause()
    end(revision)


def downgrade() -> None:
    op.execute("DELETE FROM items WHERE name = 'second'")
