"""data migration: one row in app.settings (no unique constraint, so a rerun shows)

Revision ID: s2
Revises: s1
"""
import sqlalchemy as sa
from alembic import op

revision = "s2"
down_revision = "s1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    settings = sa.table("settings", sa.column("name", sa.String), sa.column("value", sa.String),
                        schema="app")
    op.bulk_insert(settings, [{"name": "seeded", "value": "once"}])


def downgrade() -> None:
    op.execute("DELETE FROM app.settings WHERE name = 'seeded'")
