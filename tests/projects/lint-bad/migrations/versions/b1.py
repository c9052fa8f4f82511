"""a misspelt phase

Revision ID: b1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = None
branch_labels = None
depends_on = None
herd_phase = "expnad"


def upgrade() -> None:
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    pass
