"""unique index on app.users.email

Revision ID: s3
Revises: s2
"""
from alembic import op

revision = "s3"
down_revision = "s2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_email", "users", ["email"], unique=True, schema="app")


def downgrade() -> None:
    op.drop_index("ix_users_email", table_name="users", schema="app")
