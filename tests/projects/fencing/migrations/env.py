"""A standard env.py. HERD_TEST_TPM=1 turns on transaction_per_migration;
HERD_TEST_SCHEMA puts the version table in that schema (created here, as in the incident);
HERD_TEST_NOTE: env.py's own on_version_apply callback appends each revision to that file."""

import os

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
TPM = os.environ.get("HERD_TEST_TPM") == "1"
SCHEMA = os.environ.get("HERD_TEST_SCHEMA") or None
NOTE = os.environ.get("HERD_TEST_NOTE")


def noted(ctx, step, heads, run_args):  # type: ignore[no-untyped-def]
    with open(NOTE, "a") as note:  # type: ignore[arg-type]
        note.write(f"{step.up_revision_id}\n")


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
                          transaction_per_migration=TPM,
                          on_version_apply=[noted] if NOTE else None)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
