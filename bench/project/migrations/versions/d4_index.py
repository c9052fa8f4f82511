"""index accounts.email

Revision ID: d4
Revises: c3
"""
from alembic import op

revision = "d4"
down_revision = "c3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_accounts_email", "accounts", ["email"])


def downgrade() -> None:
    op.drop_index("ix_accounts_email", table_name="accounts")
