"""widgets.price

Revision ID: k2
Revises: k1
"""
import sqlalchemy as sa
from alembic import op

revision = "k2"
down_revision = "k1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("widgets", sa.Column("price", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("widgets", "price")
