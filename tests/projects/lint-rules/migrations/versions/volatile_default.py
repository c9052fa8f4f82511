"""add a column whose default is volatile

Revision ID: volatile_default
Revises: check_not_valid
"""
import sqlalchemy as sa
from alembic import op

revision = "volatile_default"
down_revision = "check_not_valid"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("token", sa.Uuid, server_default=sa.text("gen_random_uuid()")))


def downgrade() -> None:
    pass
