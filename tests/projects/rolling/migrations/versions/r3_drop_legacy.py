"""drop accounts.legacy, which release 1 reads (release 2)

Revision ID: r3
Revises: r2
"""
import sqlalchemy as sa
from alembic import op

revision = "r3"
down_revision = "r2"
branch_labels = None
depends_on = None
herd_phase = "contract"


def upgrade() -> None:
    op.drop_column("accounts", "legacy")


def downgrade() -> None:
    op.add_column("accounts", sa.Column("legacy", sa.String(40)))
