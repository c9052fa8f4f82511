"""change a column's type

Revision ID: type_change
Revises: add_not_null_default
"""
import sqlalchemy as sa
from alembic import op

revision = "type_change"
down_revision = "add_not_null_default"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.alter_column("users", "name", type_=sa.Text, existing_type=sa.String(50))


def downgrade() -> None:
    pass
