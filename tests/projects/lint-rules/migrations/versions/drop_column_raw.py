"""drop a column with raw SQL, unmarked

Revision ID: drop_column_raw
Revises: drop_column_contract
"""
from alembic import op

revision = "drop_column_raw"
down_revision = "drop_column_contract"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN nickname")


def downgrade() -> None:
    pass
