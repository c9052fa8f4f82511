"""rename a table

Revision ID: rename_table
Revises: drop_column_raw
"""
from alembic import op

revision = "rename_table"
down_revision = "drop_column_raw"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.rename_table("users", "accounts")


def downgrade() -> None:
    pass
