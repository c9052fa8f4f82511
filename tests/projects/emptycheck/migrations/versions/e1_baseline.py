"""baseline: on a new database (no table but Alembic's) create the accounts table; a database
that has tables predates Alembic and has it already. Records what it found in ``seen``.

Revision ID: e1
"""

import sqlalchemy as sa
from alembic import op

revision = "e1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    found = sorted(set(sa.inspect(op.get_bind()).get_table_names()) - {"alembic_version"})
    if not found:
        op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(100), nullable=False))
    seen = op.create_table("seen", sa.Column("id", sa.Integer, primary_key=True),
                           sa.Column("revision", sa.String(32), nullable=False),
                           sa.Column("tables", sa.Text, nullable=False))
    op.bulk_insert(seen, [{"revision": "e1", "tables": " ".join(found)}])


def downgrade() -> None:
    op.drop_table("seen")
    op.drop_table("accounts")
