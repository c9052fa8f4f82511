"""the same type change, marked contract

Revision ID: type_change_contract
Revises: type_change
"""
import sqlalchemy as sa
from alembic import op

revision = "type_change_contract"
down_revision = "type_change"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.alter_column("users", "name", type_=sa.Text, existing_type=sa.String(50))


def downgrade() -> None:
    pass
