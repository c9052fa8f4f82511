"""data migration: insert exactly one row

Revision ID: c3
Revises: b2
"""
import sqlalchemy as sa
from alembic import op

revision = "c3"
down_revision = "b2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    settings = sa.table("settings", sa.column("name", sa.String), sa.column("value", sa.String))
    op.bulk_insert(settings, [{"name": "seeded", "value": "once"}])


def downgrade() -> None:
    op.execute("DELETE FROM settings WHERE name = 'seeded'")
