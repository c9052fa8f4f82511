"""the same rename, marked contract

Revision ID: rename_table_contract
Revises: rename_table
"""
from alembic import op

revision = "rename_table_contract"
down_revision = "rename_table"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.rename_table("users", "accounts")


def downgrade() -> None:
    pass
