"""A standard env.py. HERD_TEST_TPM=1 turns on transaction_per_migration;
HERD_TEST_SCHEMA puts the version table in that schema (created here, as in the incident)."""

import os

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
TPM = os.environ.get("HERD_TEST_TPM") == "1"
SCHEMA = os.environ.get("HERD_TEST_SCHEMA") or None


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      version_table_schema=SCHEMA, transaction_per_migration=TPM)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        if SCHEMA:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            connection.commit()
        context.configure(connection=connection, version_table_schema=SCHEMA,
                          transaction_per_migration=TPM)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
