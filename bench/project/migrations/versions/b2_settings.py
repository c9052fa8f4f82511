"""create settings (no unique constraint on purpose)

Revision ID: b2
Revises: a1
"""
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.String(100), nullable=False),
    )
    op.add_column("accounts", sa.Column("created", sa.String(40)))


def downgrade() -> None:
    op.drop_column("accounts", "created")
    op.drop_table("settings")
