"""unique products.sku and orders(user_id, created_at), built CONCURRENTLY

CREATE INDEX CONCURRENTLY cannot run inside a transaction, hence autocommit_block(). It also
waits for every other transaction in the database to finish - which is why herd's waiters
hold no transaction and never sit in a blocking lock call while it runs.

Revision ID: 0005_concurrent_indexes
Revises: 0004_heartbeats
Create Date: 2025-02-17 09:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0005_concurrent_indexes"
down_revision: str | None = "0004_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
herd_phase = "expand"  # the previous release keeps working


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_products_sku", "products", ["sku"], unique=True, schema="app",
                        postgresql_concurrently=True)
        op.create_index("ix_orders_user_created", "orders", ["user_id", "created_at"],
                        schema="app", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_orders_user_created", table_name="orders", schema="app",
                      postgresql_concurrently=True)
        op.drop_index("ix_products_sku", table_name="products", schema="app",
                      postgresql_concurrently=True)
