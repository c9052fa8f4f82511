"""drop a table the previous release reads

Revision ID: drop_table
Revises:
"""
from alembic import op

revision = "drop_table"
down_revision = None
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.drop_table("legacy")


def downgrade() -> None:
    pass
