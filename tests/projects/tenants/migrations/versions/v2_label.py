"""the tenant's things.label

Revision ID: v2
Revises: v1
"""
import sqlalchemy as sa
from alembic import op

revision = "v2"
down_revision = "v1"
branch_labels = None
depends_on = None


def things() -> str:
    table = op.get_context().version_table
    return "things" if table == "alembic_version" else table.replace("_version", "_things")


def upgrade() -> None:
    op.add_column(things(), sa.Column("label", sa.String(50)))


def downgrade() -> None:
    op.drop_column(things(), "label")
