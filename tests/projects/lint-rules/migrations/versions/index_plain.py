"""index an existing table without CONCURRENTLY

Revision ID: index_plain
Revises: type_change_contract
"""
from alembic import op

revision = "index_plain"
down_revision = "type_change_contract"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_index("ix_users_name", "users", ["name"])


def downgrade() -> None:
    pass
