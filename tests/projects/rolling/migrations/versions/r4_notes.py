"""create notes, after the contract step (release 2)

Revision ID: r4
Revises: r3
"""
import sqlalchemy as sa
from alembic import op

revision = "r4"
down_revision = "r3"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("notes")
