"""the same drop, marked contract

Revision ID: drop_column_contract
Revises: drop_column
"""
from alembic import op

revision = "drop_column_contract"
down_revision = "drop_column"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.drop_column("users", "nickname")


def downgrade() -> None:
    pass
