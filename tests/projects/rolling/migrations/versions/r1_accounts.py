"""create accounts (release 1)

Revision ID: r1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "r1"
down_revision = None
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("legacy", sa.String(40)),
    )


def downgrade() -> None:
    op.drop_table("accounts")
