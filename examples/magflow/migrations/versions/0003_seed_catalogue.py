"""data migration: the starting catalogue

app.products has no unique constraint on sku yet (0005 adds it), so a second run of this
migration - what the incident's retry loop could do - would silently double the catalogue,
and then 0005 would fail on the duplicates.

Revision ID: 0003_seed_catalogue
Revises: 0002_catalogue
Create Date: 2025-01-20 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_seed_catalogue"
down_revision: str | None = "0002_catalogue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
herd_phase = "expand"  # the previous release keeps working

CATALOGUE = [
    {"sku": "MF-FLOUR-1KG", "name": "Wheat flour 1 kg", "price_cents": 189, "stock": 500},
    {"sku": "MF-SUGAR-1KG", "name": "Sugar 1 kg", "price_cents": 249, "stock": 400},
    {"sku": "MF-OIL-1L", "name": "Sunflower oil 1 l", "price_cents": 459, "stock": 300},
    {"sku": "MF-RICE-1KG", "name": "Rice 1 kg", "price_cents": 399, "stock": 250},
    {"sku": "MF-SALT-500G", "name": "Sea salt 500 g", "price_cents": 129, "stock": 600},
]


def upgrade() -> None:
    products = sa.table(
        "products",
        sa.column("sku", sa.String), sa.column("name", sa.String),
        sa.column("price_cents", sa.Integer), sa.column("stock", sa.Integer),
        schema="app",
    )
    op.bulk_insert(products, CATALOGUE)


def downgrade() -> None:
    skus = ", ".join(f"'{row['sku']}'" for row in CATALOGUE)
    op.execute(f"DELETE FROM app.products WHERE sku IN ({skus})")
