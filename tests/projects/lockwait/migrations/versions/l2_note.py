"""add items.note: an ALTER TABLE that needs the table's exclusive lock

Revision ID: l2
Revises: l1

With HERD_TEST_PARTIAL=1 it first creates another table: on MySQL/MariaDB that commits by
itself, before the ALTER waits (tests/test_lockwait.py).
"""
import os

import sqlalchemy as sa
from alembic import op

revision = "l2"
down_revision = "l1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if os.environ.get("HERD_TEST_PARTIAL") == "1":
        op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("items", sa.Column("note", sa.String(50), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "note")
