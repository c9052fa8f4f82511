"""drop a column

Revision ID: drop_column
Revises: drop_table_contract
"""
from alembic import op

revision = "drop_column"
down_revision = "drop_table_contract"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.drop_column("users", "nickname")


def downgrade() -> None:
    pass
