"""create widgets, seed one row

Revision ID: k1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "k1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    widgets = op.create_table(
        "widgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.bulk_insert(widgets, [{"name": "seeded"}])


def downgrade() -> None:
    op.drop_table("widgets")
