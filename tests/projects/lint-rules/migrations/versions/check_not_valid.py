"""a check constraint added NOT VALID

Revision ID: check_not_valid
Revises: check_constraint
"""
from alembic import op

revision = "check_not_valid"
down_revision = "check_constraint"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_check_constraint("ck_orders_total", "orders", "total >= 0", postgresql_not_valid=True)


def downgrade() -> None:
    pass
