"""add accounts.nickname, nullable: release 1 keeps working (release 2)

Revision ID: r2
Revises: r1
"""
import sqlalchemy as sa
from alembic import op

revision = "r2"
down_revision = "r1"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("accounts", sa.Column("nickname", sa.String(40)))


def downgrade() -> None:
    op.drop_column("accounts", "nickname")
