"""add items.note: an ALTER TABLE that needs the table's exclusive lock

Revision ID: l2
Revises: l1
"""
import sqlalchemy as sa
from alembic import op

revision = "l2"
down_revision = "l1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.String(50), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "note")
