"""a foreign key added NOT VALID

Revision ID: foreign_key_not_valid
Revises: foreign_key
"""
from alembic import op

revision = "foreign_key_not_valid"
down_revision = "foreign_key"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_foreign_key("fk_orders_user", "orders", "users", ["user_id"], ["id"],
                          postgresql_not_valid=True)


def downgrade() -> None:
    pass
