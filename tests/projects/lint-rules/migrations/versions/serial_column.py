"""add a serial column: its nextval() default is volatile

Revision ID: serial_column
Revises: acknowledged
"""
from alembic import op

revision = "serial_column"
down_revision = "acknowledged"
branch_labels = None
depends_on = None
herd_phase = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN position serial")


def downgrade() -> None:
    pass
