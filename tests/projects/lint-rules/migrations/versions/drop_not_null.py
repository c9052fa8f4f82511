"""make a column nullable

Revision ID: drop_not_null
Revises: set_not_null
"""
import sqlalchemy as sa
from alembic import op

revision = "drop_not_null"
down_revision = "set_not_null"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.alter_column("users", "email", nullable=True, existing_type=sa.String(100))


def downgrade() -> None:
    pass
