"""two tables with a pause between them (half-applied without transactional DDL)

Revision ID: m2
Revises: m1
"""
import sqlalchemy as sa
from alembic import op
from faultset_marks import begin, end, pause

revision = "m2"
down_revision = "m1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    begin(revision)
    op.create_table("partial_a", sa.Column("id", sa.Integer, primary_key=True))
    pause()
    op.create_table("partial_b", sa.Column("id", sa.Integer, primary_key=True))
    end(revision)


def downgrade() -> None:
    op.drop_table("partial_b")
    op.drop_table("partial_a")
