"""notes

Revision ID: f1
Revises:
Create Date: 2026-12-03 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "f1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("note", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("body", sa.String(200), nullable=False))


def downgrade():
    op.drop_table("note")
