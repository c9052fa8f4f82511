"""the first item: a data migration (a second run would insert it twice)

Revision ID: p2
Revises: p1
"""
import sqlalchemy as sa
from alembic import op

revision = "p2"
down_revision = "p1"


def upgrade() -> None:
    op.execute(sa.text("INSERT INTO item (title) VALUES ('first')"))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM item WHERE title = 'first'"))
