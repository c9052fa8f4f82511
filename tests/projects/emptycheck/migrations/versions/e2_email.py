"""accounts.email (assumes the baseline's accounts table exists)

Revision ID: e2
"""

import sqlalchemy as sa
from alembic import op

revision = "e2"
down_revision = "e1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("email", sa.String(200)))


def downgrade() -> None:
    op.drop_column("accounts", "email")
