"""add a column with a MySQL expression default

Revision ID: mysql_expression_default
Revises: stable_default
"""
import sqlalchemy as sa
from alembic import op

revision = "mysql_expression_default"
down_revision = "stable_default"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("token", sa.String(36), server_default=sa.text("(uuid())")))


def downgrade() -> None:
    pass
