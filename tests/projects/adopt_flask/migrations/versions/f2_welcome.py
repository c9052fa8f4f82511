"""the welcome note: a data migration (a second run would insert it twice)

Revision ID: f2
Revises: f1
Create Date: 2026-12-03 10:01:00
"""
import sqlalchemy as sa
from alembic import op

revision = "f2"
down_revision = "f1"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(sa.text("INSERT INTO note (body) VALUES ('welcome')"))


def downgrade():
    op.execute(sa.text("DELETE FROM note WHERE body = 'welcome'"))
