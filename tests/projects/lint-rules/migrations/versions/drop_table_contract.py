"""the same drop, marked contract

Revision ID: drop_table_contract
Revises: drop_table
"""
from alembic import op

revision = "drop_table_contract"
down_revision = "drop_table"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.drop_table("legacy")


def downgrade() -> None:
    pass
