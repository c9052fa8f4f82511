"""the starter catalogue: a data migration (a second run would insert it twice)

Revision ID: s2
Revises: s1
"""
import sqlalchemy as sa
from alembic import op

revision = "s2"
down_revision = "s1"


def upgrade() -> None:
    op.execute(sa.text("INSERT INTO product (name) VALUES ('tea'), ('coffee')"))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM product WHERE name IN ('tea', 'coffee')"))
