"""add users.name, no phase declared

Revision ID: p2
Revises: p1
"""
import sqlalchemy as sa
from alembic import op

revision = "p2"
down_revision = "p1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("name", sa.String(50), nullable=True))


def downgrade() -> None:
    pass
