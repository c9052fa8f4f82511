"""a unique constraint builds its index under a lock

Revision ID: unique_constraint
Revises: index_contract
"""
from alembic import op

revision = "unique_constraint"
down_revision = "index_contract"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_unique_constraint("uq_users_email", "users", ["email"])


def downgrade() -> None:
    pass
