"""index orders by user and date

Revision ID: 0005
Revises: 0004
"""
import time

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_user_id_created_at", "orders", ["user_id", "created_at"])
    time.sleep(0.3)


def downgrade() -> None:
    op.drop_index("ix_orders_user_id_created_at", table_name="orders")
