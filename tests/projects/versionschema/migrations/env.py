"""env.py whose online branch keeps Alembic's version table in another schema (PostgreSQL)
or database (MySQL/MariaDB), named by ``-x schema=NAME`` (default ``app``), which exists
already; the tables themselves stay in the connection's default schema. Its offline branch
passes no ``version_table_schema``: only the online migration context tells."""

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
SCHEMA = context.get_x_argument(as_dictionary=True).get("schema", "app")


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, version_table_schema=SCHEMA)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
