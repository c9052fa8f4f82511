"""An env.py that supports online migrations only; online it keeps the version table in
schema ``app`` (created here). Its offline mode tells nothing about the version table."""

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
SCHEMA = "app"


def run_migrations_offline() -> None:
    raise NotImplementedError("this project does not support offline (--sql) migrations")


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        context.configure(connection=connection, version_table_schema=SCHEMA)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
