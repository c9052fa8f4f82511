"""the same rename, marked contract

Revision ID: rename_column_contract
Revises: rename_column
"""
import sqlalchemy as sa
from alembic import op

revision = "rename_column_contract"
down_revision = "rename_column"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.alter_column("users", "name", new_column_name="full_name", existing_type=sa.String(50))


def downgrade() -> None:
    pass
