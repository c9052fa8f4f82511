"""a plain index in a contract revision still blocks writes

Revision ID: index_contract
Revises: index_new_table
"""
from alembic import op

revision = "index_contract"
down_revision = "index_new_table"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.create_index("ix_users_name", "users", ["name"])


def downgrade() -> None:
    pass
