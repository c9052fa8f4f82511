"""The multi-tenant loop: one run of env.py configures and migrates every tenant in turn.

``-x tenants=a,b`` (default ``t1,t2``) names the tenants; ``-x by=...`` how a tenant's
version table is told apart: ``search_path`` (``SET search_path`` to the tenant's schema,
no schema given to Alembic), ``schema`` (``version_table_schema=tenant``) or ``table``
(``version_table=f"{tenant}_version"`` in one schema; any backend). Tenant schemas exist
already."""

from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
X = context.get_x_argument(as_dictionary=True)
TENANTS = X.get("tenants", "t1,t2").split(",")
BY = X.get("by", "search_path")


def options(tenant: str) -> dict[str, Any]:
    if BY == "schema":
        return {"version_table_schema": tenant}
    if BY == "table":
        return {"version_table": f"{tenant}_version"}
    return {}


def run_migrations_offline() -> None:
    for tenant in TENANTS:
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                          **options(tenant))
        with context.begin_transaction():
            if BY == "search_path":
                context.execute(f"SET search_path TO {tenant}")
            context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        for tenant in TENANTS:
            if BY == "search_path":
                connection.execute(text(f"SET search_path TO {tenant}"))
                connection.commit()
            context.configure(connection=connection, **options(tenant))
            with context.begin_transaction():
                context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
