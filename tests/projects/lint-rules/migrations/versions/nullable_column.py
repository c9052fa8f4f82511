"""add a nullable column: nothing to flag

Revision ID: nullable_column
Revises: mysql_expression_default
"""
import sqlalchemy as sa
from alembic import op

revision = "nullable_column"
down_revision = "mysql_expression_default"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.add_column("users", sa.Column("bio", sa.Text, nullable=True))


def downgrade() -> None:
    pass
