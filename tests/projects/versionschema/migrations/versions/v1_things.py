"""create things, seed one row

Revision ID: v1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "v1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    things = op.create_table(
        "things",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.bulk_insert(things, [{"name": "seeded"}])


def downgrade() -> None:
    op.drop_table("things")
