"""add users.email; herd_phase = None (an unset template value) counts as unmarked

Revision ID: p4
Revises: p3
"""
import sqlalchemy as sa
from alembic import op

revision = "p4"
down_revision = "p3"
branch_labels = None
depends_on = None
herd_phase = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(100), nullable=True))


def downgrade() -> None:
    pass
