"""reads data through the connection: cannot render offline

Revision ID: unrenderable
Revises: nullable_column
"""
import sqlalchemy as sa
from alembic import op

revision = "unrenderable"
down_revision = "nullable_column"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    rows = op.get_bind().execute(sa.text("SELECT id FROM users")).fetchall()
    for (user_id,) in rows:
        op.execute(f"UPDATE users SET name = upper(name) WHERE id = {user_id}")


def downgrade() -> None:
    pass
