"""a transactional change after the autocommit block

Revision ID: c3
Revises: c2
"""
import sqlalchemy as sa
from alembic import op

revision = "c3"
down_revision = "c2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("at", sa.DateTime, nullable=True))


def downgrade() -> None:
    op.drop_column("events", "at")
