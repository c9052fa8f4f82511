"""drop users.legacy (contract)

Revision ID: p3
Revises: p2
"""
from alembic import op

revision = "p3"
down_revision = "p2"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.drop_column("users", "legacy")


def downgrade() -> None:
    pass
