"""create the tenant's things table, seed one row

Revision ID: v1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "v1"
down_revision = None
branch_labels = None
depends_on = None


def things() -> str:
    """``things``, or ``<tenant>_things`` when tenants share one schema (``-x by=table``)."""
    table = op.get_context().version_table
    return "things" if table == "alembic_version" else table.replace("_version", "_things")


def upgrade() -> None:
    table = op.create_table(
        things(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.bulk_insert(table, [{"name": "seeded"}])


def downgrade() -> None:
    op.drop_table(things())
