"""a foreign key validated while blocking writes

Revision ID: foreign_key
Revises: unique_constraint
"""
from alembic import op

revision = "foreign_key"
down_revision = "unique_constraint"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_foreign_key("fk_orders_user", "orders", "users", ["user_id"], ["id"])


def downgrade() -> None:
    pass
