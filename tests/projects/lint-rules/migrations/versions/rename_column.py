"""rename a column

Revision ID: rename_column
Revises: rename_table_contract
"""
import sqlalchemy as sa
from alembic import op

revision = "rename_column"
down_revision = "rename_table_contract"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.alter_column("users", "name", new_column_name="full_name", existing_type=sa.String(50))


def downgrade() -> None:
    pass
