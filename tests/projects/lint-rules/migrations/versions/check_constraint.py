"""a check constraint validated while blocking writes

Revision ID: check_constraint
Revises: foreign_key_not_valid
"""
from alembic import op

revision = "check_constraint"
down_revision = "foreign_key_not_valid"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_check_constraint("ck_orders_total", "orders", "total >= 0")


def downgrade() -> None:
    pass
