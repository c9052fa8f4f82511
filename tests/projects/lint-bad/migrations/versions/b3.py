"""an acknowledgement of a rule that does not exist

Revision ID: b3
Revises: b2
"""
from alembic import op

revision = "b3"
down_revision = "b2"
branch_labels = None
depends_on = None
herd_phase = "expand"
herd_lint_ignore = {"index-not-concurent": "typo"}


def upgrade() -> None:
    op.create_index("ix_users_id", "users", ["id"])


def downgrade() -> None:
    pass
