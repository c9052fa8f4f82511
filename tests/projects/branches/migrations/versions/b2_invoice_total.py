"""billing: invoices.total

Revision ID: b2
Revises: b1
"""
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "b1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invoices", sa.Column("total", sa.Integer))


def downgrade() -> None:
    pass
