"""create events, seed one row

Revision ID: c1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "c1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    events = op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(50), nullable=False),
    )
    op.bulk_insert(events, [{"kind": "seeded"}])


def downgrade() -> None:
    op.drop_table("events")
