"""make a column NOT NULL

Revision ID: set_not_null
Revises: rename_column_contract
"""
import sqlalchemy as sa
from alembic import op

revision = "set_not_null"
down_revision = "rename_column_contract"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.alter_column("users", "email", nullable=False, existing_type=sa.String(100))


def downgrade() -> None:
    pass
