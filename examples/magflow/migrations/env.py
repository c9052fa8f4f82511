"""MagFlow's env.py, as in the incident: everything lives in schema ``app``, which env.py
creates itself before handing Alembic the connection.

Run by five containers at once, that ``CREATE SCHEMA`` and the version table's
``CREATE TABLE`` race (``pg_type_typname_nsp_index``). Under ``herd run`` only the replica
holding the lock runs this file online; the others never get here.
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from magflow.db import SCHEMA, metadata
from magflow.settings import Settings

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# herd writes its --url / DATABASE_URL here; plain `alembic upgrade` falls back to settings
if not config.get_main_option("sqlalchemy.url"):
    url = Settings.from_env().require_database_url()
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=metadata, literal_binds=True,
                      version_table_schema=SCHEMA, include_schemas=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        context.configure(connection=connection, target_metadata=metadata,
                          version_table_schema=SCHEMA, include_schemas=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
