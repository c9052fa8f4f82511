"""make users.email unique

Revision ID: 0006
Revises: 0005

Fails if 0004 ever ran twice (two admin@example.com rows).
"""
import time

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ux_users_email", "users", ["email"], unique=True)
    time.sleep(0.3)


def downgrade() -> None:
    op.drop_index("ux_users_email", table_name="users")
