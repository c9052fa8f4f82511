"""a plain index, acknowledged in the file

Revision ID: acknowledged
Revises: unrenderable
"""
from alembic import op

revision = "acknowledged"
down_revision = "unrenderable"
branch_labels = None
depends_on = None
herd_phase = "expand"
herd_lint_ignore = {"index-not-concurrent": "users has 300 rows: the lock lasts milliseconds"}


def upgrade() -> None:
    op.create_index("ix_users_name", "users", ["name"])


def downgrade() -> None:
    pass
