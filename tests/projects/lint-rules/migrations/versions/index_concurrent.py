"""index an existing table concurrently

Revision ID: index_concurrent
Revises: index_plain
"""
from alembic import op

revision = "index_concurrent"
down_revision = "index_plain"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_users_name", "users", ["name"], postgresql_concurrently=True)


def downgrade() -> None:
    pass
