"""billing branch: invoices

Revision ID: b1
Revises: r0
"""
import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = "r0"
branch_labels = ("billing",)
depends_on = None


def upgrade() -> None:
    op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")))


def downgrade() -> None:
    pass
