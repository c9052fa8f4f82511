"""an acknowledgement without a reason

Revision ID: b2
Revises: b1
"""
from alembic import op

revision = "b2"
down_revision = "b1"
branch_labels = None
depends_on = None
herd_phase = "expand"
herd_lint_ignore = ["index-not-concurrent"]


def upgrade() -> None:
    op.create_index("ix_users_id", "users", ["id"])


def downgrade() -> None:
    pass
