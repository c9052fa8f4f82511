"""create users (expand)

Revision ID: p1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "p1"
down_revision = None
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
