"""create after_seed

Revision ID: f2
Revises: f1
"""
import sqlalchemy as sa
from alembic import op

revision = "f2"
down_revision = "f1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("after_seed", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("after_seed")
