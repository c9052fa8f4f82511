"""seed the default admin user (data migration)

Revision ID: 0004
Revises: 0003

Run twice, this inserts two admin rows: the incident. users.email has no unique
constraint yet (0006 adds one), exactly as in the service that had it.
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

users = sa.table(
    "users",
    sa.column("email", sa.String),
    sa.column("name", sa.String),
    sa.column("is_admin", sa.Boolean),
)


def upgrade() -> None:
    op.bulk_insert(users, [{"email": "admin@example.com", "name": "Administrator",
                            "is_admin": True}])
    time.sleep(0.3)


def downgrade() -> None:
    op.execute(users.delete().where(users.c.email == "admin@example.com"))
