"""The schema (SQLAlchemy Core, schema ``app``) and the application's engine.

The migrations in ``migrations/versions`` create exactly these tables; ``metadata`` is
env.py's ``target_metadata`` for ``alembic revision --autogenerate``.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.engine import Engine

SCHEMA = "app"

metadata = sa.MetaData(schema=SCHEMA)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
)

products = sa.Table(
    "products", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("stock", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_products_sku", "sku", unique=True),
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("app.users.id"), nullable=False),
    sa.Column("product_id", sa.BigInteger, sa.ForeignKey("app.products.id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("processed_at", sa.DateTime(timezone=True)),
    sa.Column("processed_by", sa.String(255)),
    sa.Index("ix_orders_user_created", "user_id", "created_at"),
    sa.CheckConstraint("status IN ('pending', 'confirmed', 'rejected')",
                       name="ck_orders_status"),
)

heartbeats = sa.Table(
    "heartbeats", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
)


@functools.cache
def engine(url: str) -> Engine:
    """One pooled engine per URL and process (pre-ping: connections survive a DB restart)."""
    return sa.create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True,
                            connect_args={"connect_timeout": 5, "application_name": "magflow"})
