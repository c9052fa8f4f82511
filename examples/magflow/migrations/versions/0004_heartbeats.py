"""app.heartbeats: written by the worker's heartbeat task, which beat schedules

Revision ID: 0004_heartbeats
Revises: 0003_seed_catalogue
Create Date: 2025-02-03 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_heartbeats"
down_revision: str | None = "0003_seed_catalogue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
herd_phase = "expand"  # the previous release keeps working


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        schema="app",
    )


def downgrade() -> None:
    op.drop_table("heartbeats", schema="app")
